package api

import (
	"slices"
	"strings"
)

// Role is what a caller is allowed to do.
type Role string

// The roles.
const (
	// RoleAnalyst works the SOC alert queue: lists alerts, opens an alert
	// with its findings and events, triages and closes alerts.
	RoleAnalyst Role = "analyst"
	// RolePrivacyOfficer has everything an analyst has, plus the
	// patient-level reports (who opened patient X; what did user U open),
	// reopening closed alerts, cases (investigations) and the allowlist.
	RolePrivacyOfficer Role = "privacy_officer"
	// RoleAdmin has every permission.
	RoleAdmin Role = "admin"
)

// Roles lists every role.
var Roles = []Role{RoleAnalyst, RolePrivacyOfficer, RoleAdmin}

// Valid reports whether r is a known role.
func (r Role) Valid() bool { return slices.Contains(Roles, r) }

func roleList() string {
	s := make([]string, len(Roles))
	for i, r := range Roles {
		s[i] = string(r)
	}
	return strings.Join(s, ", ")
}

// Permission is one right an endpoint needs.
type Permission string

// The permissions.
const (
	// PermAlertsRead: list alerts, alert detail (findings and the events
	// behind them), triage history.
	PermAlertsRead Permission = "alerts:read"
	// PermAlertsTriage: change status, assignee, disposition, notes.
	PermAlertsTriage Permission = "alerts:triage"
	// PermAlertsReopen: closed → triaged.
	PermAlertsReopen Permission = "alerts:reopen"
	// PermReports: patient access and user activity reports (JSON and CSV).
	PermReports Permission = "reports:read"
	// PermCases: open, read and work investigations (cases grouping
	// alerts), with their history.
	PermCases Permission = "cases:write"
	// PermAllowlistWrite: read and change the allowlist (its entries name
	// users and patients), with its history.
	PermAllowlistWrite Permission = "allowlist:write"
)

// Analysts get alert-scoped evidence only: the events an alert is about,
// enough to triage it (HIPAA's minimum necessary standard). Looking up a
// patient's or a user's whole access history is an investigation that the
// privacy office owns, so the reports are privacy_officer (and admin) only;
// reopening a closed case likewise overrides an analyst's disposition.
var rolePermissions = map[Role][]Permission{
	RoleAnalyst:        {PermAlertsRead, PermAlertsTriage},
	RolePrivacyOfficer: {PermAlertsRead, PermAlertsTriage, PermAlertsReopen, PermReports, PermCases, PermAllowlistWrite},
	RoleAdmin:          {PermAlertsRead, PermAlertsTriage, PermAlertsReopen, PermReports, PermCases, PermAllowlistWrite},
}

// Principal is an authenticated caller.
type Principal struct {
	// Name is the token name or the OIDC subject.
	Name string `json:"name"`
	// Method is "token" or "oidc".
	Method string `json:"method"`
	Roles  []Role `json:"roles"`
}

// Can reports whether any of the principal's roles grants p.
func (p *Principal) Can(perm Permission) bool {
	for _, r := range p.Roles {
		if slices.Contains(rolePermissions[r], perm) {
			return true
		}
	}
	return false
}

// Permissions lists what the principal may do.
func (p *Principal) Permissions() []Permission {
	var out []Permission
	for _, perm := range []Permission{PermAlertsRead, PermAlertsTriage, PermAlertsReopen, PermReports, PermCases, PermAllowlistWrite} {
		if p.Can(perm) {
			out = append(out, perm)
		}
	}
	return out
}

func (p *Principal) roleString() string {
	s := make([]string, len(p.Roles))
	for i, r := range p.Roles {
		s[i] = string(r)
	}
	return strings.Join(s, ",")
}
