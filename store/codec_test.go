package store

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	badger "github.com/dgraph-io/badger/v4"
)

// fullRecord sets every stored field of a record, with texts a JSON
// encoding would escape or could not carry.
func fullRecord() *Record {
	return &Record{
		Seq:        1<<40 + 7,
		Time:       time.Date(2026, 11, 28, 12, 30, 45, 123456789, time.UTC),
		Actor:      "cn=admin,dc=example,dc=org",
		ClientAddr: "[::1]:40000",
		Kind:       KindGroup,
		Op:         OpRename,
		DN:         `cn=Sales \2C "EU",ou=groups,dc=example,dc=org`,
		NewDN:      "cn=Ventes Europe,ou=groups,dc=example,dc=org",
		EntryKey:   "0b6f1d4e-7c6a-4a9e-9f4b-2f1f0f3a9c11",
		Name:       "sales-eu",
		Groups:     []string{"cn=all,ou=groups,dc=example,dc=org", "cn=été,ou=groups,dc=example,dc=org"},
		Changes: []Change{
			{Op: "replace", Attr: "description", Values: []string{"line 1\nline 2\t\"quoted\" <tag> & \u2028", ""}},
			{Op: "add", Attr: "jpegPhoto;binary", Values: []string{"\x00\xff\xfe\x80binary\x00", "\xc3\x28"}},
			{Op: "delete", Attr: "member"},
			{Op: "increment", Attr: "uidNumber", Values: []string{"1"}},
		},
		Secret:      []byte("never-stored"),
		SecretState: SecretErased,
		State:       StateDead,
		Attempts:    25,
		NextAttempt: time.Date(2026, 11, 29, 1, 2, 3, 4, time.FixedZone("", 5*3600+30*60)),
		LastError:   "axigen: connection refused",
		DeliveredAt: time.Date(1969, 7, 20, 20, 17, 40, 0, time.FixedZone("", -4*3600)),
		Note:        "password skipped: pre-hashed",
		MayTake:     []string{"sales-eu", "ventes"},
	}
}

// sameRecord compares records field by field, times by instant and offset
// (their *time.Location pointers differ after decoding).
func sameRecord(t *testing.T, got, want *Record) {
	t.Helper()
	for _, tm := range []struct {
		name      string
		got, want time.Time
	}{{"Time", got.Time, want.Time}, {"NextAttempt", got.NextAttempt, want.NextAttempt}, {"DeliveredAt", got.DeliveredAt, want.DeliveredAt}} {
		_, go_ := tm.got.Zone()
		_, wo := tm.want.Zone()
		if !tm.got.Equal(tm.want) || go_ != wo || tm.got.IsZero() != tm.want.IsZero() {
			t.Errorf("%s: got %v, want %v", tm.name, tm.got, tm.want)
		}
	}
	g, w := *got, *want
	g.Time, g.NextAttempt, g.DeliveredAt = time.Time{}, time.Time{}, time.Time{}
	w.Time, w.NextAttempt, w.DeliveredAt = time.Time{}, time.Time{}, time.Time{}
	if !reflect.DeepEqual(g, w) {
		t.Errorf("records differ:\ngot  %#v\nwant %#v", g, w)
	}
}

func TestBinaryRecordRoundTripsEveryField(t *testing.T) {
	in := fullRecord()
	enc := encodeRecord(in)
	if enc[0] != recordFormat1 {
		t.Fatalf("encoding starts with %#x, want the format byte", enc[0])
	}
	if bytes.Contains(enc, in.Secret) {
		t.Fatal("the encoding holds the plaintext secret")
	}
	if n := in.encodedSizeHint(); len(enc) > n {
		t.Errorf("encoding is %d bytes, more than the hint %d", len(enc), n)
	}
	out, err := decodeRecord(enc)
	if err != nil {
		t.Fatal(err)
	}
	want := *in
	want.Secret = nil
	sameRecord(t, out, &want)

	// A record with nothing optional set: zero times and nil lists stay so.
	min := &Record{Seq: 1, Kind: KindAccount, Op: OpDelete, DN: "uid=a,dc=x", State: StatePrepared}
	out, err = decodeRecord(encodeRecord(min))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(out, min) {
		t.Fatalf("got %#v, want %#v", out, min)
	}
}

// Format 2 (what the journal stores) reads back as the same record as
// format 1 (what commands carry), texts outside its codes and times in
// other zones, before 1970 or with a zero record time included.
func TestStoredRecordRoundTrips(t *testing.T) {
	full := fullRecord()
	full.Secret = nil
	full.Token = PrepareToken{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 0xff}
	odd := fullRecord()
	odd.Secret = nil
	odd.Kind, odd.Op, odd.State, odd.SecretState = "printer", "compare", "lost", "hashed"
	odd.Changes = []Change{{Op: "frobnicate", Attr: "x"}, {Op: "", Attr: "", Values: []string{""}}}
	odd.Time, odd.Attempts = time.Time{}, -3
	local := accountRecord("uid=l,dc=x")
	local.Seq, local.State = 9, StateCommitted
	local.Time = time.Date(2026, 6, 1, 8, 0, 0, 1, time.Local)
	local.NextAttempt = local.Time.Add(-90 * time.Minute)
	min := &Record{Seq: 1, Kind: KindAccount, Op: OpDelete, DN: "uid=a,dc=x", State: StatePrepared}
	for name, in := range map[string]*Record{"full": full, "odd": odd, "local": local, "min": min, "zero": {}} {
		enc := encodeStoredRecord(in)
		if enc[0] != recordFormat2 {
			t.Fatalf("%s: encoding starts with %#x, want format 2", name, enc[0])
		}
		if n := in.storedSizeHint(); len(enc) > n || n > len(enc)+64 {
			t.Errorf("%s: encoding is %d bytes, the hint %d", name, len(enc), n)
		}
		got, err := decodeRecord(enc)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		want, err := decodeRecord(encodeRecord(in))
		if err != nil {
			t.Fatalf("%s in format 1: %v", name, err)
		}
		sameRecord(t, got, want)
		if !reflect.DeepEqual(got, want) && name != "local" && name != "full" {
			// No zone to tell apart: the records are equal whole.
			t.Errorf("%s: got %#v, want %#v", name, got, want)
		}
		if got.Time.String() != want.Time.String() || got.NextAttempt.String() != want.NextAttempt.String() || got.DeliveredAt.String() != want.DeliveredAt.String() {
			t.Errorf("%s: times print %v %v %v, want %v %v %v", name, got.Time, got.NextAttempt, got.DeliveredAt, want.Time, want.NextAttempt, want.DeliveredAt)
		}
	}
	// The write path's records: each version is smaller than in format 1.
	r := accountRecord("uid=b12-345-6,ou=people,dc=example,dc=org")
	r.Seq, r.Time, r.State = 123456, time.Date(2026, 12, 7, 1, 2, 3, 456789123, time.UTC), StatePrepared
	r.Token = PrepareToken{0xa1, 0xb2, 0xc3, 0xd4, 0xe5, 0xf6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16}
	c := r.next()
	c.State, c.EntryKey, c.NextAttempt = StateCommitted, "key-b12-345-6", r.Time.Add(time.Millisecond)
	d := c.next()
	d.State, d.DeliveredAt, d.NextAttempt, d.Attempts = StateDelivered, c.NextAttempt.Add(time.Second), time.Time{}, 1
	for _, v := range []*Record{r, c, d} {
		one, two := len(encodeRecord(v)), len(encodeStoredRecord(v))
		t.Logf("%s: %d bytes in format 1, %d in format 2", v.State, one, two)
		if n := v.storedSizeHint(); n < two || n > two+64 {
			t.Errorf("%s: %d bytes, the hint %d", v.State, two, n)
		}
		if two >= one*85/100 {
			t.Errorf("%s: %d bytes in format 2, not much below format 1's %d", v.State, two, one)
		}
	}
}

func TestCorruptStoredRecordsAreErrors(t *testing.T) {
	rec := fullRecord()
	rec.Token = PrepareToken{1}
	enc := encodeStoredRecord(rec)
	for n := range len(enc) {
		if _, err := decodeRecord(enc[:n]); err == nil {
			t.Fatalf("record cut to %d of %d bytes decoded", n, len(enc))
		}
	}
	if _, err := decodeRecord(append(enc[:len(enc):len(enc)], 0)); err == nil {
		t.Fatal("a record with a byte left over decoded")
	}
	// Flags a later format might add, and codes beyond the lists.
	for _, bad := range [][]byte{
		binary.AppendUvarint([]byte{recordFormat2}, hasAll+1),
		{recordFormat2, 0, 1, 3, 1, 1, 1, 0},
		{recordFormat2, 0, 1, 1, 6, 1, 1, 0},
		{recordFormat2, 0, 1, 1, 1, 5, 1, 0},
		{recordFormat2, 0, 1, 1, 1, 1, 4, 0},
	} {
		if _, err := decodeRecord(bad); !errors.Is(err, errCorrupt) {
			t.Errorf("%x: %v", bad, err)
		}
	}
	if _, err := decodeRecord([]byte{recordFormat2, 0, 1, 1, 1, 1, 1, 0}); err != nil {
		t.Errorf("the least record: %v", err)
	}
}

func TestBinaryTimeKeepsLocalZone(t *testing.T) {
	in := time.Date(2026, 6, 1, 8, 0, 0, 1, time.Local)
	d := decoder{s: string(appendTime(nil, in))}
	got := d.time()
	if d.err != nil || !got.Equal(in) {
		t.Fatalf("got %v (%v), want %v", got, d.err, in)
	}
	// As with JSON: a local time comes back in the local zone (or UTC
	// when local is UTC), so it prints the same.
	if got.String() != in.String() {
		t.Fatalf("printed %q, want %q", got.String(), in.String())
	}
}

func TestOldJSONRecordsStillDecode(t *testing.T) {
	in := fullRecord()
	in.Secret = nil
	in.Changes[1].Values = []string{"binary"} // JSON cannot carry invalid UTF-8
	js, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	out, err := decodeRecord(js)
	if err != nil {
		t.Fatal(err)
	}
	sameRecord(t, out, in)
}

func TestCorruptValuesAreErrorsNotPanics(t *testing.T) {
	rec := encodeRecord(fullRecord())
	bare := fullRecord()
	bare.MayTake = nil
	optional := len(encodeRecord(bare)) // a record without the optional fields ends there
	for n := range len(rec) {
		if n == optional {
			continue
		}
		if _, err := decodeRecord(rec[:n]); err == nil {
			t.Fatalf("record cut to %d of %d bytes decoded", n, len(rec))
		}
	}
	if _, err := decodeRecord(append(rec[:len(rec):len(rec)], 0)); err == nil {
		t.Fatal("a record with a byte left over decoded")
	}
	// A huge list length must not allocate before failing.
	huge := []byte{recordFormat1, 1, 0}
	for range 8 {
		huge = append(huge, 0) // empty texts
	}
	huge = append(huge, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f)
	if _, err := decodeRecord(huge); !errors.Is(err, errCorrupt) {
		t.Fatalf("huge list: %v", err)
	}
	if _, err := decodeRecord([]byte{9, 1, 2}); err == nil {
		t.Fatal("an unknown format decoded")
	}
}

// A journal written before the binary encoding (JSON records), or before
// format 2 (format 1 records), opens, serves its records and takes new
// changes, which it writes in format 2.
func TestJournalWithOldValuesKeepsWorking(t *testing.T) {
	for name, encode := range map[string]func(*Record) ([]byte, error){
		"json":     func(r *Record) ([]byte, error) { return json.Marshal(r) },
		"format 1": func(r *Record) ([]byte, error) { return encodeRecord(r), nil },
	} {
		t.Run(name, func(t *testing.T) { journalWithOldValues(t, encode) })
	}
}

func journalWithOldValues(t *testing.T, encode func(*Record) ([]byte, error)) {
	dir := t.TempDir()
	o := testOptions(dir)
	o.Now = newFakeClock().Now // Stats (compared) measure ages with it
	j := openTest(t, dir, o)
	ctx := context.Background()
	old := mustPrepareCommit(t, j, accountRecord("uid=old,ou=people,dc=example,dc=org"), "key-old")
	pending, err := j.Prepare(ctx, accountRecord("uid=pending,ou=people,dc=example,dc=org"))
	if err != nil {
		t.Fatal(err)
	}
	// Rewrite every record as the old encoder did: whole, its commit
	// merged (the old journal wrote a Commit as the whole record; see
	// encodeCommit) and the "a/" key empty.
	err = j.db.Update(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: prefixRecord})
		var keys, vals [][]byte
		for it.Rewind(); it.Valid(); it.Next() {
			r, err := storedRecord(txn, it.Item(), prefixRecord)
			if err != nil {
				return err
			}
			old, err := encode(r)
			if err != nil {
				return err
			}
			keys, vals = append(keys, it.Item().KeyCopy(nil)), append(vals, old)
			if r.State != StateDelivered {
				keys, vals = append(keys, numKey(prefixActive, r.Seq)), append(vals, nil)
			}
		}
		it.Close()
		for i := range keys {
			if err := txn.Set(keys[i], vals[i]); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	stored := func(seq uint64) []byte {
		t.Helper()
		var v []byte
		err := j.db.View(func(txn *badger.Txn) error {
			item, err := txn.Get(numKey(prefixRecord, seq))
			if err != nil {
				return err
			}
			v, err = item.ValueCopy(nil)
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	want, err := j.Get(old)
	if err != nil {
		t.Fatal(err)
	}
	if enc, _ := encode(want); !bytes.Equal(stored(old), enc) {
		t.Fatalf("record %d is stored as %q, not in the old encoding", old, stored(old))
	}
	before := dump(t, j)
	if !strings.Contains(before[old], `"entryKey":"key-old"`) {
		t.Fatalf("record %d: %s", old, before[old])
	}
	j.Close()

	j = openTest(t, dir, o)
	if after := dump(t, j); !reflect.DeepEqual(before, after) {
		t.Fatalf("reopened journal differs:\nbefore %v\nafter  %v", before, after)
	}
	prepared, err := j.Prepared()
	if err != nil || len(prepared) != 1 || prepared[0].Seq != pending {
		t.Fatalf("prepared after reopening: %v, %v", prepared, err)
	}
	if err := j.Commit(ctx, pending, ""); err != nil {
		t.Fatalf("commit an old record: %v", err)
	}
	mustPrepareCommit(t, j, accountRecord("uid=new,ou=people,dc=example,dc=org"), "")
	if r, err := j.Get(pending); err != nil || r.State != StateCommitted {
		t.Fatalf("old record after commit: %+v, %v", r, err)
	}
	// A Commit leaves the record as its Prepare stored it (see
	// encodeCommit); its next version is written whole, in format 2.
	if err := j.Retry(ctx, pending); err != nil {
		t.Fatalf("retry an old record: %v", err)
	}
	if r, err := j.Get(pending); err != nil || r.State != StateCommitted {
		t.Fatalf("old record after retry: %+v, %v", r, err)
	}
	if v := stored(pending); v[0] != recordFormat2 {
		t.Fatalf("the retry of an old record wrote %q, not format 2", v)
	}
	if _, err := j.Housekeep(ctx); err != nil {
		t.Fatalf("housekeeping over JSON records: %v", err)
	}
}

// Texts that are not valid UTF-8 are stored as a JSON round trip makes
// them, as they always were (the former standby feed carried records as
// JSON), by a journal of its own and by a replicated one alike, and the
// caller's record is left as it was.
func TestInvalidUTF8IsStoredAsValidText(t *testing.T) {
	dir := t.TempDir()
	o := testOptions(dir)
	o.Now = newFakeClock().Now
	j := openTest(t, dir, o)
	repl := openReplicated(t, t.TempDir(), j.opts.KeyFile)
	ctx := context.Background()
	r := accountRecord("uid=\xffbad,ou=people,dc=example,dc=org")
	r.Changes = append(r.Changes, Change{Op: "add", Attr: "cn", Values: []string{"caf\xe9", "ok"}})
	r.Groups = []string{"cn=\xc3,dc=x"}
	seq := mustPrepareCommit(t, j, r, "k\xfe")
	var next uint64
	if _, err := repl.Apply(ctx, 1, stamped(t, repl, &next, o.Now(), Command{Op: CmdPrepare, Record: r})); err != nil {
		t.Fatal(err)
	}
	// A Commit's texts too.
	if res, err := repl.Apply(ctx, 2, []Command{{Op: CmdCommit, Seq: next, EntryKey: "k\xfe", Name: "n\xfd", Time: o.Now()}}); err != nil || res[0] != nil {
		t.Fatal(err, res)
	}
	for name, got := range map[string]func() (*Record, error){
		"local":      func() (*Record, error) { return j.Get(seq) },
		"replicated": func() (*Record, error) { return repl.Get(next) },
	} {
		got, err := got()
		if err != nil {
			t.Fatal(err)
		}
		if got.DN != "uid=\uFFFDbad,ou=people,dc=example,dc=org" || got.Changes[1].Values[0] != "caf\uFFFD" || got.Groups[0] != "cn=\uFFFD,dc=x" {
			t.Fatalf("%s: stored %q %q %q", name, got.DN, got.Changes[1].Values, got.Groups)
		}
		if got.State != StateCommitted || got.EntryKey != "k\uFFFD" {
			t.Fatalf("%s: committed %s with entry key %q", name, got.State, got.EntryKey)
		}
		if name == "replicated" && got.Name != "n\uFFFD" {
			t.Fatalf("%s: committed with name %q", name, got.Name)
		}
	}
	if r.DN != "uid=\xffbad,ou=people,dc=example,dc=org" || r.Changes[1].Values[0] != "caf\xe9" {
		t.Fatal("Prepare changed the caller's record")
	}
}
