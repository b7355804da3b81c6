package synth

import (
	"errors"
	"fmt"
	"math"
	"regexp"
	"time"
	_ "time/tzdata" // facilities name IANA zones; do not depend on the host's zoneinfo
)

// Config describes the hospital to generate. The zero value is not valid;
// start from DefaultConfig. Every field is part of the determinism
// contract: the same Config yields byte-identical output.
type Config struct {
	// Seed selects the hospital. Everything is derived from it with PCG
	// streams, so changing one part of the model does not reshuffle the
	// others more than necessary.
	Seed uint64 `yaml:"seed" json:"seed"`
	// Start is the first simulated day. Only its calendar date (year, month,
	// day as written in Start's own location) matters: each facility's day 0
	// begins at local midnight of that date in the facility's time zone.
	Start time.Time `yaml:"start" json:"start"`
	// Days is how many local days are simulated. ≥ 1.
	Days int `yaml:"days" json:"days"`
	// WarmupDays is how many days pass before incidents that need a learned
	// baseline (volume, off_hours) are injected. Detectors with per-user
	// baselines need that much history; ehrwatch's defaults want 5 worked
	// days (volume) and 7 calendar days with 200 events (off_hours). Kinds
	// that cannot be placed after the warm-up are skipped. 0 ≤ n < Days.
	WarmupDays int `yaml:"warmup_days" json:"warmup_days"`
	// Facilities are the hospitals of the organisation. At least one.
	Facilities []FacilityConfig `yaml:"facilities" json:"facilities"`
	// IncidentRate is how many incidents of each kind are injected per 1000
	// user-days (users × Days), rounded, with at least one of each kind when
	// the rate is > 0. 0 turns injection off (a clean stream, for measuring
	// false positives). 0–100.
	IncidentRate float64 `yaml:"incident_rate" json:"incident_rate"`
	// BenignRate is the same for the scripted benign confounders (night-shift
	// nurses, on-call physicians, an ED surge, …). Confounders that occur
	// naturally in the stream are labelled whatever this rate is. 0–100.
	BenignRate float64 `yaml:"benign_rate" json:"benign_rate"`
	// LateEventRate is the fraction of background events that reach the
	// audit feed late: their logged_time, and so their place in arrival
	// order, is minutes to LateMaxDelay after their event_time. Other events
	// arrive 0.2–3 s after they happen. Injected incident events are never
	// late. 0 ≤ r ≤ 0.5.
	LateEventRate float64 `yaml:"late_event_rate" json:"late_event_rate"`
	// LateMaxDelay bounds how late a late event is. 1m–48h.
	LateMaxDelay time.Duration `yaml:"late_max_delay" json:"late_max_delay"`
}

// FacilityConfig describes one hospital.
type FacilityConfig struct {
	// ID is the facility id of every event and the <facility> in ids such
	// as "evt-<facility>-0000001": lower-case letters, digits and '-'.
	ID string `yaml:"id" json:"id"`
	// TimeZone is an IANA zone name, such as "America/New_York". Shifts and
	// encounters follow local wall-clock time, across DST changes.
	TimeZone string `yaml:"time_zone" json:"time_zone"`
	// Source is the source system written into events ("epic"); empty
	// means "ehr".
	Source string `yaml:"source" json:"source"`
	// Users is how many EHR accounts the facility has. ≥ MinUsers.
	Users int `yaml:"users" json:"users"`
	// Patients is how many people have a chart. ≥ 5 × Users, so that the
	// encounters the staff generate find distinct patients.
	Patients int `yaml:"patients" json:"patients"`
}

// MinUsers is the smallest facility the generator staffs: every
// department needs at least one account of each of its roles.
const MinUsers = 60

// DefaultConfig is two weeks at two facilities: a 380-account hospital in
// New York and a 120-account community hospital in Chicago, starting on
// Monday 2026-10-26 so that the 2026-11-01 fall-back DST change is inside,
// with incidents from day 8 (after the detectors' default warm-ups). It
// produces about 300,000 events.
func DefaultConfig() Config {
	return Config{
		Seed:       20261026,
		Start:      time.Date(2026, 10, 26, 0, 0, 0, 0, time.UTC),
		Days:       14,
		WarmupDays: 8,
		Facilities: []FacilityConfig{
			{ID: "nyc", TimeZone: "America/New_York", Source: "epic", Users: 380, Patients: 9000},
			{ID: "chi", TimeZone: "America/Chicago", Source: "cerner", Users: 120, Patients: 3000},
		},
		IncidentRate:  0.4,
		BenignRate:    0.4,
		LateEventRate: 0.01,
		LateMaxDelay:  2 * time.Hour,
	}
}

// WithUsers returns a copy of c whose facilities together have about n
// users, keeping their proportions (each at least MinUsers) and their
// patients-per-user ratios.
func (c Config) WithUsers(n int) Config {
	total := 0
	for _, f := range c.Facilities {
		total += f.Users
	}
	out := c
	out.Facilities = make([]FacilityConfig, len(c.Facilities))
	for i, f := range c.Facilities {
		nf := f
		if total > 0 {
			nf.Users = max(MinUsers, int(math.Round(float64(n)*float64(f.Users)/float64(total))))
			ratio := 24.0
			if f.Users > 0 && f.Patients > 0 {
				ratio = float64(f.Patients) / float64(f.Users)
			}
			nf.Patients = int(math.Ceil(float64(nf.Users) * ratio))
		}
		out.Facilities[i] = nf
	}
	return out
}

// FieldError is a configuration error tied to one key, such as
// "synth.days: must be ≥ 1".
type FieldError struct {
	Key string
	Msg string
}

// Error returns "key: message".
func (e *FieldError) Error() string { return e.Key + ": " + e.Msg }

var facilityIDPattern = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,31}$`)

// Validate reports every bad value, each as a *FieldError keyed under
// "synth." (joined with errors.Join).
func (c *Config) Validate() error {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, &FieldError{Key: "synth." + key, Msg: fmt.Sprintf(format, args...)})
	}
	if c.Start.IsZero() {
		bad("start", "must be set")
	} else if y := c.Start.Year(); y < 1971 || y > 2200 {
		bad("start", "must be a date between 1971 and 2200 (got %s)", c.Start.Format(time.DateOnly))
	}
	if c.Days < 1 {
		bad("days", "must be ≥ 1 (got %d)", c.Days)
	} else if c.Days > 3660 {
		bad("days", "must be ≤ 3660 (got %d)", c.Days)
	}
	if c.WarmupDays < 0 {
		bad("warmup_days", "must be ≥ 0 (got %d)", c.WarmupDays)
	} else if c.Days >= 1 && c.WarmupDays >= c.Days {
		bad("warmup_days", "must be < days (%d) (got %d)", c.Days, c.WarmupDays)
	}
	if len(c.Facilities) == 0 {
		bad("facilities", "must list at least one facility")
	}
	seen := map[string]bool{}
	for i, f := range c.Facilities {
		key := fmt.Sprintf("facilities[%d]", i)
		switch {
		case !facilityIDPattern.MatchString(f.ID):
			bad(key+".id", "must be 1–32 lower-case letters, digits or '-', starting with a letter or digit (got %q)", f.ID)
		case seen[f.ID]:
			bad(key+".id", "duplicate facility id %q", f.ID)
		}
		seen[f.ID] = true
		if f.TimeZone == "" {
			bad(key+".time_zone", "must be an IANA time zone such as America/New_York")
		} else if _, err := time.LoadLocation(f.TimeZone); err != nil {
			bad(key+".time_zone", "unknown IANA time zone %q", f.TimeZone)
		}
		if len(f.Source) > 64 {
			bad(key+".source", "must be at most 64 bytes")
		}
		if f.Users < MinUsers {
			bad(key+".users", "must be ≥ %d (got %d)", MinUsers, f.Users)
		} else if f.Users > 10_000_000 {
			bad(key+".users", "must be ≤ 10000000 (got %d)", f.Users)
		}
		if f.Users >= MinUsers && f.Patients < 5*f.Users {
			bad(key+".patients", "must be ≥ 5 × users (%d) (got %d)", 5*f.Users, f.Patients)
		}
	}
	if !(c.IncidentRate >= 0 && c.IncidentRate <= 100) {
		bad("incident_rate", "must be between 0 and 100 (got %g)", c.IncidentRate)
	}
	if !(c.BenignRate >= 0 && c.BenignRate <= 100) {
		bad("benign_rate", "must be between 0 and 100 (got %g)", c.BenignRate)
	}
	if !(c.LateEventRate >= 0 && c.LateEventRate <= 0.5) {
		bad("late_event_rate", "must be between 0 and 0.5 (got %g)", c.LateEventRate)
	}
	if c.LateEventRate > 0 && (c.LateMaxDelay < time.Minute || c.LateMaxDelay > 48*time.Hour) {
		bad("late_max_delay", "must be between 1m and 48h when late_event_rate > 0 (got %s)", c.LateMaxDelay)
	}
	return errors.Join(errs...)
}

// userDays is users × days over all facilities.
func (c *Config) userDays() float64 {
	n := 0
	for _, f := range c.Facilities {
		n += f.Users
	}
	return float64(n) * float64(c.Days)
}

// countFor turns a per-1000-user-day rate into a count: rounded, at least
// one when the rate is positive.
func (c *Config) countFor(rate float64) int {
	if rate <= 0 {
		return 0
	}
	return max(1, int(math.Round(rate*c.userDays()/1000)))
}
