package schemas

import (
	"strings"
	"testing"
)

func TestMigrationsAreOrderedAndSplit(t *testing.T) {
	ms, err := Migrations()
	if err != nil {
		t.Fatal(err)
	}
	if len(ms) == 0 {
		t.Fatal("no migrations embedded")
	}
	for i, m := range ms {
		if i > 0 && m.Version <= ms[i-1].Version {
			t.Errorf("migration %04d_%s is not after %04d: versions must increase", m.Version, m.Name, ms[i-1].Version)
		}
		stmts, err := m.Statements(DefaultMigrationParams())
		if err != nil {
			t.Fatalf("%04d_%s: %v", m.Version, m.Name, err)
		}
		if len(stmts) == 0 {
			t.Errorf("%04d_%s: no statements", m.Version, m.Name)
		}
		for _, s := range stmts {
			if strings.Contains(s, "{{") {
				t.Errorf("%04d_%s: unfilled placeholder in %q", m.Version, m.Name, s)
			}
			if strings.HasSuffix(s, ";") {
				t.Errorf("%04d_%s: statement keeps its semicolon", m.Version, m.Name)
			}
		}
	}
}

func TestMigrationStatementsFillRetention(t *testing.T) {
	m := Migration{Version: 9, Name: "x", SQL: "-- c\nCREATE TABLE a (d Date) ENGINE = MergeTree ORDER BY d\nTTL d + INTERVAL {{retention_days}} DAY;\nSELECT {{dlq_retention_days}};\n"}
	stmts, err := m.Statements(MigrationParams{RetentionDays: 7, DLQRetentionDays: 3})
	if err != nil {
		t.Fatal(err)
	}
	if len(stmts) != 2 || !strings.Contains(stmts[0], "INTERVAL 7 DAY") || stmts[1] != "SELECT 3" {
		t.Fatalf("got %q", stmts)
	}
	if _, err := m.Statements(MigrationParams{RetentionDays: 0, DLQRetentionDays: 3}); err == nil || !strings.Contains(err.Error(), "retention_days") {
		t.Fatalf("zero retention accepted: %v", err)
	}
	bad := Migration{Version: 1, Name: "y", SQL: "SELECT {{nope}};"}
	if _, err := bad.Statements(DefaultMigrationParams()); err == nil {
		t.Fatal("unknown placeholder accepted")
	}
	open := Migration{Version: 1, Name: "z", SQL: "SELECT 1"}
	if _, err := open.Statements(DefaultMigrationParams()); err == nil {
		t.Fatal("unterminated statement accepted")
	}
}
