package store

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
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
	for n := range len(rec) {
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

// A journal written before the binary encoding (JSON records) opens,
// serves its records and takes new changes.
func TestJournalWithOldJSONValuesKeepsWorking(t *testing.T) {
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
	// Rewrite every record as the JSON encoder did.
	err = j.db.Update(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: prefixRecord})
		var keys, vals [][]byte
		for it.Rewind(); it.Valid(); it.Next() {
			v, err := it.Item().ValueCopy(nil)
			if err != nil {
				return err
			}
			r, err := decodeRecord(v)
			if err != nil {
				return err
			}
			js, err := json.Marshal(r)
			if err != nil {
				return err
			}
			keys, vals = append(keys, it.Item().KeyCopy(nil)), append(vals, js)
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
	err = j.db.View(func(txn *badger.Txn) error {
		k := numKey(prefixRecord, old)
		item, err := txn.Get(k)
		if err != nil {
			return err
		}
		if v, _ := item.ValueCopy(nil); !bytes.HasPrefix(v, []byte("{")) {
			return fmt.Errorf("%q is not JSON: %q", k, v)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
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
	seq := mustPrepareCommit(t, j, r, "")
	var next uint64
	if _, err := repl.Apply(ctx, 1, stamped(t, repl, &next, o.Now(), Command{Op: CmdPrepare, Record: r})); err != nil {
		t.Fatal(err)
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
	}
	if r.DN != "uid=\xffbad,ou=people,dc=example,dc=org" || r.Changes[1].Values[0] != "caf\xe9" {
		t.Fatal("Prepare changed the caller's record")
	}
}
