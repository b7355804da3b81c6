package testenv_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"math"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/google/uuid"

	"github.com/ehrwatch/ehrwatch/pipeline/testenv"
)

// allTypesDDL has one column of every ClickHouse type the project uses.
const allTypesDDL = `CREATE TABLE all_types (
	id   UInt64,
	s    String,
	lc   LowCardinality(String),
	ns   Nullable(String),
	lcn  LowCardinality(Nullable(String)),
	ts   DateTime64(3, 'UTC'),
	nts  Nullable(DateTime64(3, 'UTC')),
	dt   DateTime('UTC'),
	d    Date,
	b    Bool,
	u8   UInt8,
	u16  UInt16,
	u32  UInt32,
	u64  UInt64,
	i64  Int64,
	f64  Float64,
	arr  Array(String),
	m    Map(String, String),
	e    Enum8('min' = -128, 'read' = 1, 'write' = 2, 'export' = 3, 'max' = 127),
	uid  UUID
) ENGINE = MergeTree ORDER BY id`

const allTypesColumns = "id, s, lc, ns, lcn, ts, nts, dt, d, b, u8, u16, u32, u64, i64, f64, arr, m, e, uid"

type allTypesRow struct {
	ID  uint64
	S   string
	LC  string
	NS  *string
	LCN *string
	TS  time.Time  // DateTime64(3, 'UTC')
	NTS *time.Time // Nullable(DateTime64(3, 'UTC'))
	DT  time.Time  // DateTime('UTC')
	D   time.Time  // Date: only the calendar date counts (see wantDate)
	B   bool
	U8  uint8
	U16 uint16
	U32 uint32
	U64 uint64
	I64 int64
	F64 float64
	Arr []string
	M   map[string]string
	E   string
	UID uuid.UUID
}

func (r *allTypesRow) values() []any {
	return []any{r.ID, r.S, r.LC, r.NS, r.LCN, r.TS, r.NTS, r.DT, r.D, r.B, r.U8, r.U16, r.U32, r.U64,
		r.I64, r.F64, r.Arr, r.M, r.E, r.UID}
}

func (r *allTypesRow) pointers() []any {
	return []any{&r.ID, &r.S, &r.LC, &r.NS, &r.LCN, &r.TS, &r.NTS, &r.DT, &r.D, &r.B, &r.U8, &r.U16, &r.U32,
		&r.U64, &r.I64, &r.F64, &r.Arr, &r.M, &r.E, &r.UID}
}

func ptr[T any](v T) *T { return &v }

var (
	zMinus7   = time.FixedZone("UTC-7", -7*3600)
	zPlus0530 = time.FixedZone("UTC+5:30", 5*3600+30*60)
	zPlus14   = time.FixedZone("UTC+14", 14*3600)
)

// edgeRows covers the edge values: empty strings, unicode and control
// characters, NULLs, min/max of every numeric and temporal type that
// clickhouse-go can carry, and times in non-UTC zones.
func edgeRows() []allTypesRow {
	return []allTypesRow{
		{
			ID: 0, S: "", LC: "", NS: nil, LCN: nil,
			// DateTime64 minimum (1900-01-01).
			TS:  time.Date(1900, 1, 1, 0, 0, 0, 0, time.UTC),
			NTS: nil,
			DT:  time.Unix(0, 0).UTC(),                       // DateTime minimum
			D:   time.Date(1970, 1, 1, 0, 0, 0, 0, time.UTC), // Date minimum
			B:   false, U8: 0, U16: 0, U32: 0, U64: 0, I64: math.MinInt64, F64: -math.MaxFloat64,
			Arr: []string{}, M: map[string]string{}, E: "min", UID: uuid.Nil,
		},
		{
			ID: 1, S: "Ünïcødé 🚑 患者 «ё» 'quote' \"dq\" \\ back\nnew\tline\x00nul", LC: "ward 🏥 7",
			NS: ptr(""), LCN: ptr(""),
			// The largest instant a Go time.Time can carry into DateTime64 via
			// UnixNano (ClickHouse itself goes to 2299-12-31).
			TS:  time.Date(2262, 4, 11, 23, 47, 16, 854_000_000, time.UTC),
			NTS: ptr(time.Date(2024, 2, 29, 23, 59, 59, 999_000_000, zPlus0530)),
			DT:  time.Date(2106, 2, 7, 6, 28, 15, 0, time.UTC), // DateTime maximum
			D:   time.Date(2149, 6, 6, 0, 0, 0, 0, time.UTC),   // Date maximum
			B:   true, U8: math.MaxUint8, U16: math.MaxUint16, U32: math.MaxUint32, U64: math.MaxUint64,
			I64: math.MaxInt64, F64: math.MaxFloat64,
			Arr: []string{"", "a", "ü🚑", "x,y"},
			M:   map[string]string{"": "", "k": "v", "ключ": "значение 🚑"},
			E:   "max", UID: uuid.MustParse("ffffffff-ffff-ffff-ffff-ffffffffffff"),
		},
		{
			ID: 2, S: "plain", LC: "ward-1", NS: ptr("Ωmega"), LCN: ptr("lc ∅"),
			// Non-UTC offsets with millisecond precision must come back as
			// the same instant.
			TS:  time.Date(2024, 3, 10, 2, 30, 0, 123_000_000, zMinus7),
			NTS: ptr(time.Date(2024, 1, 1, 0, 0, 0, 1_000_000, zPlus14)),
			DT:  time.Date(2024, 3, 10, 23, 15, 7, 0, zPlus0530),
			// 2024-02-29 23:00 at UTC-7 is already 2024-03-01 in UTC:
			// clickhouse-go stores the calendar date of the value's own zone.
			D: time.Date(2024, 2, 29, 23, 0, 0, 0, zMinus7),
			B: true, U8: 1, U16: 2, U32: 3, U64: 4, I64: -1, F64: math.SmallestNonzeroFloat64,
			Arr: []string{"solo"}, M: map[string]string{"a": "1"}, E: "read",
			UID: uuid.MustParse("123e4567-e89b-12d3-a456-426614174000"),
		},
	}
}

// genRow makes a varied, deterministic row for the bulk tests.
func genRow(i int) allTypesRow {
	zone := time.FixedZone(fmt.Sprintf("z%d", i%27), (i%27-13)*3600)
	base := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC).Add(time.Duration(i) * 1237 * time.Millisecond)
	r := allTypesRow{
		ID:  uint64(i),
		S:   fmt.Sprintf("patient-%d-ü", i),
		LC:  fmt.Sprintf("ward-%d", i%7),
		TS:  base.In(zone),
		DT:  base.Truncate(time.Second).In(zone),
		D:   time.Date(2000+i%100, time.Month(1+i%12), 1+i%28, i%24, 0, 0, 0, zone),
		B:   i%2 == 0,
		U8:  uint8(i),
		U16: uint16(i * 7),
		U32: uint32(i) * 65_537,
		U64: uint64(i) * 0x9E37_79B9_7F4A_7C15,
		I64: int64(i)*-1_000_003 + 17,
		F64: float64(i) / 7,
		E:   []string{"read", "write", "export"}[i%3],
		UID: uuid.NewSHA1(uuid.NameSpaceOID, []byte(fmt.Sprint(i))),
	}
	if i%3 != 0 {
		r.NS = ptr(fmt.Sprintf("note %d", i))
	}
	if i%5 != 0 {
		r.LCN = ptr(fmt.Sprintf("dept-%d", i%11))
	}
	if i%4 != 0 {
		r.NTS = ptr(base.Add(time.Hour).In(zone))
	}
	r.Arr = make([]string, i%4)
	for j := range r.Arr {
		r.Arr[j] = fmt.Sprintf("tag-%d-%d", i, j)
	}
	r.M = make(map[string]string, i%3)
	for j := 0; j < i%3; j++ {
		r.M[fmt.Sprintf("k%d", j)] = fmt.Sprintf("v%d", i+j)
	}
	return r
}

// wantDate is what a Date column holds for t: its calendar date in t's own
// zone, read back as midnight in the server zone (UTC).
func wantDate(t time.Time) time.Time {
	y, m, d := t.Date()
	return time.Date(y, m, d, 0, 0, 0, 0, time.UTC)
}

func sameTime(want, got time.Time) bool {
	return want.Truncate(time.Millisecond).Equal(got) && got.Location().String() == "UTC"
}

func compareRow(want, got allTypesRow) []string {
	var diffs []string
	add := func(col string, w, g any) { diffs = append(diffs, fmt.Sprintf("%s: want %#v, got %#v", col, w, g)) }
	if want.ID != got.ID {
		add("id", want.ID, got.ID)
	}
	if want.S != got.S {
		add("s", want.S, got.S)
	}
	if want.LC != got.LC {
		add("lc", want.LC, got.LC)
	}
	if (want.NS == nil) != (got.NS == nil) || (want.NS != nil && *want.NS != *got.NS) {
		add("ns", want.NS, got.NS)
	}
	if (want.LCN == nil) != (got.LCN == nil) || (want.LCN != nil && *want.LCN != *got.LCN) {
		add("lcn", want.LCN, got.LCN)
	}
	if !sameTime(want.TS, got.TS) {
		add("ts", want.TS.String(), got.TS.String())
	}
	if (want.NTS == nil) != (got.NTS == nil) || (want.NTS != nil && !sameTime(*want.NTS, *got.NTS)) {
		add("nts", want.NTS, got.NTS)
	}
	if !sameTime(want.DT.Truncate(time.Second), got.DT) {
		add("dt", want.DT.String(), got.DT.String())
	}
	if wd := wantDate(want.D); !wd.Equal(got.D) {
		add("d", wd.String(), got.D.String())
	}
	if want.B != got.B {
		add("b", want.B, got.B)
	}
	if want.U8 != got.U8 || want.U16 != got.U16 || want.U32 != got.U32 || want.U64 != got.U64 {
		add("u8/u16/u32/u64", []uint64{uint64(want.U8), uint64(want.U16), uint64(want.U32), want.U64},
			[]uint64{uint64(got.U8), uint64(got.U16), uint64(got.U32), got.U64})
	}
	if want.I64 != got.I64 {
		add("i64", want.I64, got.I64)
	}
	if want.F64 != got.F64 {
		add("f64", want.F64, got.F64)
	}
	if !slices.Equal(want.Arr, got.Arr) {
		add("arr", want.Arr, got.Arr)
	}
	if !maps.Equal(want.M, got.M) {
		add("m", want.M, got.M)
	}
	if want.E != got.E {
		add("e", want.E, got.E)
	}
	if want.UID != got.UID {
		add("uid", want.UID, got.UID)
	}
	return diffs
}

func insertRows(t *testing.T, ctx context.Context, conn clickhouse.Conn, rows []allTypesRow) {
	t.Helper()
	batch, err := conn.PrepareBatch(ctx, "INSERT INTO all_types ("+allTypesColumns+")")
	if err != nil {
		t.Fatalf("PrepareBatch: %v", err)
	}
	for i := range rows {
		if err := batch.Append(rows[i].values()...); err != nil {
			t.Fatalf("Append row %d: %v", rows[i].ID, err)
		}
	}
	if err := batch.Send(); err != nil {
		t.Fatalf("Send %d rows: %v", len(rows), err)
	}
}

func readAll(t *testing.T, ctx context.Context, conn clickhouse.Conn) []allTypesRow {
	t.Helper()
	rows, err := conn.Query(ctx, "SELECT "+allTypesColumns+" FROM all_types ORDER BY id")
	if err != nil {
		t.Fatalf("Query: %v", err)
	}
	defer rows.Close()
	var out []allTypesRow
	for rows.Next() {
		var r allTypesRow
		if err := rows.Scan(r.pointers()...); err != nil {
			t.Fatalf("Scan row %d: %v", len(out), err)
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		t.Fatalf("rows.Err: %v", err)
	}
	return out
}

func checkRows(t *testing.T, want, got []allTypesRow) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("read %d rows, want %d", len(got), len(want))
	}
	bad := 0
	for i := range want {
		if diffs := compareRow(want[i], got[i]); len(diffs) > 0 {
			bad++
			if bad <= 5 {
				t.Errorf("row %d differs:\n  %s", want[i].ID, strings.Join(diffs, "\n  "))
			}
		}
	}
	if bad > 5 {
		t.Errorf("... %d rows differ in total", bad)
	}
}

func TestClickHouseRoundTripAllTypesSmall(t *testing.T) {
	conn, _ := testenv.ClickHouse(t)
	ctx := context.Background()
	if err := conn.Exec(ctx, allTypesDDL); err != nil {
		t.Fatalf("create table: %v", err)
	}
	want := edgeRows()
	insertRows(t, ctx, conn, want)
	checkRows(t, want, readAll(t, ctx, conn))

	// The types must have survived the Native insert path exactly.
	rows, err := conn.Query(ctx, "SELECT name, type FROM system.columns WHERE database = currentDatabase() AND table = 'all_types' ORDER BY position")
	if err != nil {
		t.Fatalf("system.columns: %v", err)
	}
	defer rows.Close()
	var types []string
	for rows.Next() {
		var name, typ string
		if err := rows.Scan(&name, &typ); err != nil {
			t.Fatal(err)
		}
		types = append(types, name+" "+typ)
	}
	if len(types) != 20 || types[5] != "ts DateTime64(3, 'UTC')" || types[4] != "lcn LowCardinality(Nullable(String))" {
		t.Errorf("unexpected column types: %q", types)
	}
}

func TestClickHouseRoundTripAllTypesLarge(t *testing.T) {
	conn, _ := testenv.ClickHouse(t)
	ctx := context.Background()
	if err := conn.Exec(ctx, allTypesDDL); err != nil {
		t.Fatalf("create table: %v", err)
	}
	const n = 50_000
	want := make([]allTypesRow, n)
	for i := range want {
		want[i] = genRow(i)
	}
	// Two batches: two parts, and so at least two Native blocks on the way
	// out even without the small max_block_size below.
	insertRows(t, ctx, conn, want[:n/2])
	insertRows(t, ctx, conn, want[n/2:])

	var count uint64
	if err := conn.QueryRow(ctx, "SELECT count() FROM all_types").Scan(&count); err != nil || count != n {
		t.Fatalf("count() = %d, %v; want %d", count, err, n)
	}
	checkRows(t, want, readAll(t, ctx, conn))

	// Many small blocks (different LowCardinality dictionaries per block).
	small := clickhouse.Context(ctx, clickhouse.WithSettings(clickhouse.Settings{"max_block_size": 1000}))
	checkRows(t, want, readAll(t, small, conn))
}

func TestClickHouseEmptyResult(t *testing.T) {
	conn, _ := testenv.ClickHouse(t)
	ctx := context.Background()
	if err := conn.Exec(ctx, "CREATE TABLE e (x UInt64) ENGINE = MergeTree ORDER BY x"); err != nil {
		t.Fatal(err)
	}
	rows, err := conn.Query(ctx, "SELECT x FROM e")
	if err != nil {
		t.Fatalf("query on empty table: %v", err)
	}
	if rows.Next() {
		t.Error("empty table returned a row")
	}
	if err := rows.Err(); err != nil {
		t.Errorf("rows.Err: %v", err)
	}
	rows.Close()
	var x uint64
	if err := conn.QueryRow(ctx, "SELECT x FROM e").Scan(&x); err == nil {
		t.Error("QueryRow on an empty table: want an error (no rows), got nil")
	}
}

func wantException(t *testing.T, err error, code int32, msgPart string) {
	t.Helper()
	if err == nil {
		t.Fatalf("want ClickHouse exception %d, got nil", code)
	}
	var ex *clickhouse.Exception
	if !errors.As(err, &ex) {
		t.Fatalf("want *clickhouse.Exception (code %d), got %T: %v", code, err, err)
	}
	if ex.Code != code {
		t.Errorf("exception code = %d, want %d (%v)", ex.Code, code, err)
	}
	if !strings.Contains(err.Error(), msgPart) {
		t.Errorf("error %q does not contain %q", err, msgPart)
	}
}

func TestClickHouseErrors(t *testing.T) {
	conn, _ := testenv.ClickHouse(t)
	ctx := context.Background()

	_, err := conn.Query(ctx, "SELEC 1")
	wantException(t, err, 62, "Syntax error")

	// ClickHouse's HTTP interface refuses several statements in one request.
	err = conn.Exec(ctx, "CREATE TABLE m1 (x UInt8) ENGINE = Memory; CREATE TABLE m2 (x UInt8) ENGINE = Memory")
	wantException(t, err, 62, "Multi-statements")

	_, err = conn.Query(ctx, "SELECT * FROM no_such_table")
	wantException(t, err, 60, "no_such_table")

	var n uint64
	err = conn.QueryRow(ctx, "SELECT count() FROM no_such_table").Scan(&n)
	wantException(t, err, 60, "no_such_table")

	err = conn.Exec(ctx, "DROP TABLE no_such_table")
	wantException(t, err, 60, "no_such_table")

	_, err = conn.PrepareBatch(ctx, "INSERT INTO no_such_table (a, b)")
	wantException(t, err, 60, "no_such_table")

	_, err = conn.Query(clickhouse.Context(ctx, clickhouse.WithSettings(clickhouse.Settings{"no_such_setting": 1})), "SELECT 1")
	wantException(t, err, 115, "no_such_setting")

	_, err = conn.Query(ctx, "SELECT throwIf(number = 3, 'boom from the server') FROM numbers(10)")
	wantException(t, err, 395, "boom from the server")

	// A server-side failure while inserting a batch surfaces from Send.
	if err := conn.Exec(ctx, "CREATE TABLE checked (x UInt8, CONSTRAINT small CHECK x < 10) ENGINE = MergeTree ORDER BY x"); err != nil {
		t.Fatal(err)
	}
	batch, err := conn.PrepareBatch(ctx, "INSERT INTO checked")
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range []uint8{1, 2, 200} {
		if err := batch.Append(v); err != nil {
			t.Fatal(err)
		}
	}
	wantException(t, batch.Send(), 469, "small")
	if err := conn.QueryRow(ctx, "SELECT count() FROM checked").Scan(&n); err != nil || n != 0 {
		t.Errorf("after a failed insert count() = %d, %v; want 0 rows", n, err)
	}

	// A client-side type error is an error too, not a panic.
	batch, err = conn.PrepareBatch(ctx, "INSERT INTO checked")
	if err != nil {
		t.Fatal(err)
	}
	if err := batch.Append("not a number"); err == nil {
		t.Error("appending a string to a UInt8 column: want an error")
	}
	_ = batch.Abort()

	// The connection (and the server) still work afterwards.
	if err := conn.QueryRow(ctx, "SELECT 42").Scan(new(uint8)); err != nil {
		t.Errorf("query after errors: %v", err)
	}
}

func TestClickHouseExecDDL(t *testing.T) {
	conn, db := testenv.ClickHouse(t)
	ctx := context.Background()
	ddl := "CREATE TABLE IF NOT EXISTS events (id UInt64, at DateTime64(3, 'UTC')) ENGINE = MergeTree ORDER BY id"
	for i := 0; i < 2; i++ {
		if err := conn.Exec(ctx, ddl); err != nil {
			t.Fatalf("CREATE TABLE IF NOT EXISTS, run %d: %v", i+1, err)
		}
	}
	err := conn.Exec(ctx, "CREATE TABLE events (id UInt64) ENGINE = MergeTree ORDER BY id")
	wantException(t, err, 57, "events")

	// The connection is bound to the test database.
	var cur string
	if err := conn.QueryRow(ctx, "SELECT currentDatabase()").Scan(&cur); err != nil || cur != db {
		t.Errorf("currentDatabase() = %q, %v; want %q", cur, err, db)
	}
	var tables uint64
	if err := conn.QueryRow(ctx, "SELECT count() FROM system.tables WHERE database = ? AND name = 'events'", db).Scan(&tables); err != nil || tables != 1 {
		t.Errorf("system.tables has %d rows for %s.events, %v; want 1", tables, db, err)
	}
	if err := conn.Exec(ctx, "ALTER TABLE events ADD COLUMN IF NOT EXISTS note String DEFAULT ''"); err != nil {
		t.Errorf("ALTER TABLE: %v", err)
	}
	// Client-side bound arguments in Exec. Pitfall (clickhouse-go, not the
	// server): a bound time.Time is rendered as toDateTime(...), so the
	// sub-second part is dropped, and its zone must be an IANA name
	// (time.FixedZone names fail on the server). Insert through
	// PrepareBatch, or bind with server-side parameters, to keep precision.
	at := time.Date(2024, 5, 6, 7, 8, 9, 10_000_000, time.UTC)
	if err := conn.Exec(ctx, "INSERT INTO events (id, at, note) VALUES (?, ?, ?)", uint64(7), at, "it's"); err != nil {
		t.Fatalf("INSERT ... VALUES with args: %v", err)
	}
	var (
		got  time.Time
		note string
	)
	if err := conn.QueryRow(ctx, "SELECT at, note FROM events WHERE id = ?", uint64(7)).Scan(&got, &note); err != nil {
		t.Fatal(err)
	}
	if !got.Equal(at.Truncate(time.Second)) || note != "it's" {
		t.Errorf("got at=%v note=%q; want at=%v note=%q", got, note, at.Truncate(time.Second), "it's")
	}
	err = conn.Exec(ctx, "INSERT INTO events (id, at) VALUES (?, ?)", uint64(8), at.In(zMinus7))
	wantException(t, err, 36, "UTC-7")
}

// dedupInsert inserts ids [from, from+3) in one batch with ctx.
func dedupInsert(t *testing.T, ctx context.Context, conn clickhouse.Conn, table string, from uint64) {
	t.Helper()
	batch, err := conn.PrepareBatch(ctx, "INSERT INTO "+table+" (id, v)")
	if err != nil {
		t.Fatal(err)
	}
	for id := from; id < from+3; id++ {
		if err := batch.Append(id, fmt.Sprintf("v%d", id)); err != nil {
			t.Fatal(err)
		}
	}
	if err := batch.Send(); err != nil {
		t.Fatalf("Send: %v", err)
	}
}

func countRows(t *testing.T, conn clickhouse.Conn, query string) uint64 {
	t.Helper()
	var n uint64
	if err := conn.QueryRow(context.Background(), query).Scan(&n); err != nil {
		t.Fatalf("%s: %v", query, err)
	}
	return n
}

func TestClickHouseInsertDeduplicationToken(t *testing.T) {
	conn, _ := testenv.ClickHouse(t)
	ctx := context.Background()
	if err := conn.Exec(ctx, "CREATE TABLE dedup (id UInt64, v String) ENGINE = MergeTree ORDER BY id SETTINGS non_replicated_deduplication_window = 1000"); err != nil {
		t.Fatal(err)
	}
	if err := conn.Exec(ctx, "CREATE TABLE nodedup (id UInt64, v String) ENGINE = MergeTree ORDER BY id"); err != nil {
		t.Fatal(err)
	}
	withToken := func(tok string, extra clickhouse.Settings) context.Context {
		s := clickhouse.Settings{"insert_deduplication_token": tok}
		maps.Copy(s, extra)
		return clickhouse.Context(ctx, clickhouse.WithSettings(s))
	}
	for _, mode := range []struct {
		name     string
		settings clickhouse.Settings
	}{
		{"server-default", nil}, // ClickHouse >= 26.2 defaults async_insert to 1
		{"async_insert=0", clickhouse.Settings{"async_insert": 0}},
		{"async_insert=1", clickhouse.Settings{"async_insert": 1, "wait_for_async_insert": 1}},
	} {
		t.Run(mode.name, func(t *testing.T) {
			for _, table := range []string{"dedup", "nodedup"} {
				if err := conn.Exec(ctx, "TRUNCATE TABLE "+table); err != nil {
					t.Fatal(err)
				}
			}
			tok := "batch-" + uuid.NewString()
			dedupInsert(t, withToken(tok, mode.settings), conn, "dedup", 0)
			dedupInsert(t, withToken(tok, mode.settings), conn, "dedup", 0) // retry: same token, same block
			if n := countRows(t, conn, "SELECT count() FROM dedup"); n != 3 {
				t.Errorf("same token twice: count() = %d, want 3 (deduplicated)", n)
			}
			dedupInsert(t, withToken(tok, mode.settings), conn, "dedup", 100) // same token, other data
			if n := countRows(t, conn, "SELECT count() FROM dedup"); n != 3 {
				t.Errorf("same token, different block: count() = %d, want 3 (the token is the identity)", n)
			}
			dedupInsert(t, withToken(tok+"-2", mode.settings), conn, "dedup", 0) // new token, same data
			if n := countRows(t, conn, "SELECT count() FROM dedup"); n != 6 {
				t.Errorf("new token: count() = %d, want 6", n)
			}
			// Without non_replicated_deduplication_window nothing is deduplicated.
			dedupInsert(t, withToken(tok, mode.settings), conn, "nodedup", 0)
			dedupInsert(t, withToken(tok, mode.settings), conn, "nodedup", 0)
			if n := countRows(t, conn, "SELECT count() FROM nodedup"); n != 6 {
				t.Errorf("table without a deduplication window: count() = %d, want 6", n)
			}
		})
	}
}

func TestClickHouseReplacingMergeTreeFinal(t *testing.T) {
	conn, _ := testenv.ClickHouse(t)
	ctx := context.Background()
	if err := conn.Exec(ctx, `CREATE TABLE findings (
		id String, version UInt64, status LowCardinality(String)
	) ENGINE = ReplacingMergeTree(version) ORDER BY id`); err != nil {
		t.Fatal(err)
	}
	insert := func(version uint64, status string, ids ...string) {
		t.Helper()
		b, err := conn.PrepareBatch(ctx, "INSERT INTO findings")
		if err != nil {
			t.Fatal(err)
		}
		for _, id := range ids {
			if err := b.Append(id, version, status); err != nil {
				t.Fatal(err)
			}
		}
		if err := b.Send(); err != nil {
			t.Fatal(err)
		}
	}
	insert(1, "open", "a", "b", "c")
	insert(3, "closed", "a", "b")
	insert(2, "reopened", "a", "d")
	if n := countRows(t, conn, "SELECT count() FROM findings"); n != 7 {
		t.Errorf("count() without FINAL = %d, want 7 (three unmerged parts)", n)
	}
	if n := countRows(t, conn, "SELECT count() FROM findings FINAL"); n != 4 {
		t.Errorf("count() FINAL = %d, want 4", n)
	}
	var status string
	if err := conn.QueryRow(ctx, "SELECT status FROM findings FINAL WHERE id = 'a'").Scan(&status); err != nil || status != "closed" {
		t.Errorf("FINAL status of a = %q, %v; want closed (highest version)", status, err)
	}
	if err := conn.Exec(ctx, "OPTIMIZE TABLE findings FINAL"); err != nil {
		t.Fatal(err)
	}
	if n := countRows(t, conn, "SELECT count() FROM findings"); n != 4 {
		t.Errorf("count() after OPTIMIZE FINAL = %d, want 4", n)
	}
}

func TestClickHouseContextOptions(t *testing.T) {
	conn, _ := testenv.ClickHouse(t)
	ctx := context.Background()

	setting := func(ctx context.Context) uint64 {
		t.Helper()
		var v uint64
		if err := conn.QueryRow(ctx, "SELECT toUInt64(getSetting('max_block_size'))").Scan(&v); err != nil {
			t.Fatal(err)
		}
		return v
	}
	def := setting(ctx)
	withSettings := clickhouse.Context(ctx,
		clickhouse.WithQueryID("ehrwatch-test-"+uuid.NewString()),
		clickhouse.WithSettings(clickhouse.Settings{"max_block_size": 1234}))
	if v := setting(withSettings); v != 1234 {
		t.Errorf("max_block_size with WithSettings = %d, want 1234", v)
	}
	if v := setting(ctx); v != def {
		t.Errorf("max_block_size after a query WithSettings = %d, want the default %d (settings are per query)", v, def)
	}
	// A SET statement over HTTP without a session has no lasting effect.
	if err := conn.Exec(ctx, "SET max_block_size = 777"); err != nil {
		t.Fatal(err)
	}
	if v := setting(ctx); v != def {
		t.Errorf("max_block_size after SET = %d, want the default %d", v, def)
	}

	// Server-side query parameters.
	var (
		s  string
		n  uint32
		ts time.Time
	)
	pctx := clickhouse.Context(ctx, clickhouse.WithParameters(clickhouse.Parameters{
		"s": "it's ü", "n": "42", "ts": "2024-05-06 07:08:09.123",
	}))
	if err := conn.QueryRow(pctx, "SELECT {s:String}, {n:UInt32}, {ts:DateTime64(3, 'UTC')}").Scan(&s, &n, &ts); err != nil {
		t.Fatalf("query with parameters: %v", err)
	}
	if s != "it's ü" || n != 42 || !ts.Equal(time.Date(2024, 5, 6, 7, 8, 9, 123_000_000, time.UTC)) {
		t.Errorf("parameters came back as %q %d %v", s, n, ts)
	}

	// A cancelled context is an error, not a hang.
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := conn.Query(cctx, "SELECT 1"); err == nil {
		t.Error("query with a cancelled context: want an error")
	}

	// The query id is passed through (the adapter echoes it like ClickHouse).
	addr := testenv.ClickHouseAddr(t)
	req, _ := http.NewRequest(http.MethodPost, "http://"+addr+"/?query_id=my-query-id", strings.NewReader("SELECT 1"))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if got := resp.Header.Get("X-ClickHouse-Query-Id"); got != "my-query-id" || strings.TrimSpace(string(body)) != "1" {
		t.Errorf("raw HTTP: query id %q, body %q", got, body)
	}
}

func TestClickHouseFeatures(t *testing.T) {
	conn, db := testenv.ClickHouse(t)
	ctx := context.Background()
	exec := func(q string) {
		t.Helper()
		if err := conn.Exec(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}

	t.Run("MaterializedView", func(t *testing.T) {
		exec("CREATE TABLE mv_src (user String, at DateTime64(3, 'UTC')) ENGINE = MergeTree ORDER BY at")
		exec("CREATE TABLE mv_dst (user String, n UInt64) ENGINE = SummingMergeTree ORDER BY user")
		exec("CREATE MATERIALIZED VIEW mv TO mv_dst AS SELECT user, count() AS n FROM mv_src GROUP BY user")
		b, err := conn.PrepareBatch(ctx, "INSERT INTO mv_src")
		if err != nil {
			t.Fatal(err)
		}
		for i, u := range []string{"ann", "bob", "ann", "ann"} {
			if err := b.Append(u, time.Unix(int64(i), 0)); err != nil {
				t.Fatal(err)
			}
		}
		if err := b.Send(); err != nil {
			t.Fatal(err)
		}
		if n := countRows(t, conn, "SELECT sum(n) FROM mv_dst WHERE user = 'ann'"); n != 3 {
			t.Errorf("materialized view: ann has %d, want 3", n)
		}
	})

	t.Run("TTL", func(t *testing.T) {
		exec("CREATE TABLE ttl_t (at DateTime('UTC'), v UInt8) ENGINE = MergeTree ORDER BY at TTL at + INTERVAL 30 DAY DELETE")
		b, err := conn.PrepareBatch(ctx, "INSERT INTO ttl_t")
		if err != nil {
			t.Fatal(err)
		}
		_ = b.Append(time.Now().Add(-365*24*time.Hour), uint8(1))
		_ = b.Append(time.Now(), uint8(2))
		if err := b.Send(); err != nil {
			t.Fatal(err)
		}
		exec("OPTIMIZE TABLE ttl_t FINAL")
		if n := countRows(t, conn, "SELECT count() FROM ttl_t"); n != 1 {
			t.Errorf("TTL: %d rows after OPTIMIZE FINAL, want 1 (expired row deleted)", n)
		}
	})

	t.Run("Projection", func(t *testing.T) {
		exec(`CREATE TABLE proj_t (id UInt64, user String,
			PROJECTION by_user (SELECT * ORDER BY user)) ENGINE = MergeTree ORDER BY id`)
		b, err := conn.PrepareBatch(ctx, "INSERT INTO proj_t")
		if err != nil {
			t.Fatal(err)
		}
		for i := 0; i < 1000; i++ {
			_ = b.Append(uint64(i), fmt.Sprintf("u%d", i%10))
		}
		if err := b.Send(); err != nil {
			t.Fatal(err)
		}
		if n := countRows(t, conn, "SELECT count() FROM proj_t WHERE user = 'u3'"); n != 100 {
			t.Errorf("projection table: %d rows for u3, want 100", n)
		}
		q := fmt.Sprintf("SELECT count() FROM system.projection_parts WHERE database = '%s' AND table = 'proj_t' AND name = 'by_user' AND active", db)
		if n := countRows(t, conn, q); n == 0 {
			t.Error("projection by_user was not built")
		}
	})

	t.Run("SparseColumns", func(t *testing.T) {
		// Mostly-default columns are stored sparse; the Native output must
		// still be plain (dense) for clickhouse-go.
		exec("CREATE TABLE sparse_t (id UInt64, s String, n UInt64) ENGINE = MergeTree ORDER BY id")
		b, err := conn.PrepareBatch(ctx, "INSERT INTO sparse_t")
		if err != nil {
			t.Fatal(err)
		}
		for i := 0; i < 20_000; i++ {
			s, n := "", uint64(0)
			if i%1000 == 0 {
				s, n = "x", uint64(i)
			}
			_ = b.Append(uint64(i), s, n)
		}
		if err := b.Send(); err != nil {
			t.Fatal(err)
		}
		q := fmt.Sprintf("SELECT count() FROM system.parts_columns WHERE database = '%s' AND table = 'sparse_t' AND active AND serialization_kind = 'Sparse'", db)
		if n := countRows(t, conn, q); n == 0 {
			t.Fatal("expected sparse serialization on disk; the test no longer covers sparse columns")
		}
		rows, err := conn.Query(ctx, "SELECT id, s, n FROM sparse_t ORDER BY id")
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		i := 0
		for ; rows.Next(); i++ {
			var (
				id, n uint64
				s     string
			)
			if err := rows.Scan(&id, &s, &n); err != nil {
				t.Fatal(err)
			}
			ws, wn := "", uint64(0)
			if i%1000 == 0 {
				ws, wn = "x", uint64(i)
			}
			if id != uint64(i) || s != ws || n != wn {
				t.Fatalf("row %d: got (%d, %q, %d)", i, id, s, n)
			}
		}
		if err := rows.Err(); err != nil || i != 20_000 {
			t.Fatalf("read %d rows, err %v", i, err)
		}
	})
}

// TestClickHouseConcurrentConnections drives the server through a pool of
// HTTP connections at once, as the pipeline's writers will.
func TestClickHouseConcurrentConnections(t *testing.T) {
	conn, _ := testenv.ClickHouse(t)
	ctx := context.Background()
	if err := conn.Exec(ctx, "CREATE TABLE conc (w UInt32, i UInt32, s String) ENGINE = MergeTree ORDER BY (w, i)"); err != nil {
		t.Fatal(err)
	}
	const workers, batches, rowsPerBatch = 24, 4, 500
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for b := 0; b < batches; b++ {
				batch, err := conn.PrepareBatch(ctx, "INSERT INTO conc")
				if err != nil {
					errs <- err
					return
				}
				for i := 0; i < rowsPerBatch; i++ {
					if err := batch.Append(uint32(w), uint32(b*rowsPerBatch+i), "x"); err != nil {
						errs <- err
						return
					}
				}
				if err := batch.Send(); err != nil {
					errs <- err
					return
				}
				var n uint64
				if err := conn.QueryRow(ctx, "SELECT count() FROM conc WHERE w = ?", uint32(w)).Scan(&n); err != nil {
					errs <- err
					return
				}
				if want := uint64((b + 1) * rowsPerBatch); n != want {
					errs <- fmt.Errorf("worker %d: count %d after batch %d, want %d", w, n, b, want)
					return
				}
			}
		}(w)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if n := countRows(t, conn, "SELECT count() FROM conc"); n != workers*batches*rowsPerBatch {
		t.Errorf("count() = %d, want %d", n, workers*batches*rowsPerBatch)
	}
}

// BenchmarkClickHouseInsert100k measures a 100k-row, 15-column batch insert
// (PrepareBatch + Append + Send) and reports rows/s.
func BenchmarkClickHouseInsert100k(b *testing.B) {
	conn, _ := testenv.ClickHouse(b)
	ctx := context.Background()
	if err := conn.Exec(ctx, `CREATE TABLE bench (
		id UInt64, at DateTime64(3, 'UTC'), tenant LowCardinality(String), user String, patient String,
		action Enum8('read' = 1, 'write' = 2), ok Bool, n UInt32, score Float64, ward LowCardinality(Nullable(String)),
		note Nullable(String), tags Array(String), attrs Map(String, String), uid UUID, day Date
	) ENGINE = MergeTree ORDER BY (tenant, at)`); err != nil {
		b.Fatal(err)
	}
	const n = 100_000
	base := time.Now().UTC()
	b.ResetTimer()
	var total time.Duration
	for it := 0; it < b.N; it++ {
		start := time.Now()
		batch, err := conn.PrepareBatch(ctx, "INSERT INTO bench")
		if err != nil {
			b.Fatal(err)
		}
		for i := 0; i < n; i++ {
			var ward *string
			if i%3 != 0 {
				ward = ptr(fmt.Sprintf("ward-%d", i%20))
			}
			if err := batch.Append(uint64(i), base.Add(time.Duration(i)*time.Millisecond), fmt.Sprintf("t%d", i%5),
				fmt.Sprintf("user-%d", i%1000), fmt.Sprintf("patient-%d", i), []string{"read", "write"}[i%2], i%7 == 0,
				uint32(i), float64(i)/3, ward, (*string)(nil), []string{"a", "b"}, map[string]string{"k": "v"},
				uuid.New(), base); err != nil {
				b.Fatal(err)
			}
		}
		if err := batch.Send(); err != nil {
			b.Fatal(err)
		}
		total += time.Since(start)
	}
	b.ReportMetric(float64(n*b.N)/total.Seconds(), "rows/s")
}
