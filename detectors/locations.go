package detectors

import (
	"errors"
	"time"
)

// FacilityLocations loads the time zone of every facility (IANA names such
// as "America/New_York") and returns a lookup for Env.Location: unknown
// facilities get UTC. Errors name the facility id.
func FacilityLocations(zones map[string]string) (func(facilityID string) *time.Location, error) {
	locs := make(map[string]*time.Location, len(zones))
	var errs []error
	for _, id := range sortedKeys(zones) {
		loc, err := time.LoadLocation(zones[id])
		if err != nil {
			errs = append(errs, fieldErrorf("facilities."+id, "unknown time zone %q", zones[id]))
			continue
		}
		locs[id] = loc
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return func(facilityID string) *time.Location {
		if loc, ok := locs[facilityID]; ok {
			return loc
		}
		return time.UTC
	}, nil
}
