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

func TestOldJSONRecordsAndEventsStillDecode(t *testing.T) {
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

	at := time.Date(2026, 11, 28, 12, 0, 0, 5, time.UTC)
	jsonEvent := fmt.Sprintf(`{"pos":42,"time":"%s","type":"put","seq":%d,"record":%s}`, at.Format(time.RFC3339Nano), in.Seq, js)
	for name, enc := range map[string][]byte{
		"json":   []byte(jsonEvent),
		"binary": appendEvent(nil, 42, at, EventPut, in.Seq, encodeRecord(in)),
	} {
		ev, err := decodeEvent(enc)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if ev.Pos != 42 || !ev.Time.Equal(at) || ev.Type != EventPut || ev.Seq != in.Seq || ev.Record == nil {
			t.Fatalf("%s: got %+v", name, ev)
		}
		sameRecord(t, ev.Record, in)
		pos, when, err := eventPosTime(enc)
		if err != nil || pos != 42 || !when.Equal(at) {
			t.Fatalf("%s: position and time %d %v %v", name, pos, when, err)
		}
	}
	del, err := decodeEvent(appendEvent(nil, 43, at, EventDelete, 9, nil))
	if err != nil || del.Type != EventDelete || del.Seq != 9 || del.Record != nil {
		t.Fatalf("delete: %+v, %v", del, err)
	}
}

func TestCorruptValuesAreErrorsNotPanics(t *testing.T) {
	rec := encodeRecord(fullRecord())
	ev := appendEvent(nil, 7, time.Now(), EventPut, 3, rec)
	for n := range len(rec) {
		if _, err := decodeRecord(rec[:n]); err == nil {
			t.Fatalf("record cut to %d of %d bytes decoded", n, len(rec))
		}
	}
	for n := range len(ev) {
		if _, err := decodeEvent(ev[:n]); err == nil {
			t.Fatalf("event cut to %d of %d bytes decoded", n, len(ev))
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

// A journal written before the binary encoding (JSON records and change
// log) opens, serves its records and feed, and takes new changes.
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
	// Rewrite every record and change-log entry as the JSON encoder did.
	err = j.db.Update(func(txn *badger.Txn) error {
		for _, p := range [][]byte{prefixRecord, prefixEvent} {
			it := txn.NewIterator(badger.IteratorOptions{Prefix: p})
			var keys, vals [][]byte
			for it.Rewind(); it.Valid(); it.Next() {
				v, err := it.Item().ValueCopy(nil)
				if err != nil {
					return err
				}
				var js []byte
				if bytes.Equal(p, prefixRecord) {
					r, err := decodeRecord(v)
					if err != nil {
						return err
					}
					js, err = json.Marshal(r)
					if err != nil {
						return err
					}
				} else {
					ev, err := decodeEvent(v)
					if err != nil {
						return err
					}
					js, err = json.Marshal(ev)
					if err != nil {
						return err
					}
				}
				keys, vals = append(keys, it.Item().KeyCopy(nil)), append(vals, js)
			}
			it.Close()
			for i := range keys {
				if err := txn.Set(keys[i], vals[i]); err != nil {
					return err
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	err = j.db.View(func(txn *badger.Txn) error {
		for _, k := range [][]byte{numKey(prefixRecord, old), numKey(prefixEvent, 1)} {
			item, err := txn.Get(k)
			if err != nil {
				return err
			}
			if v, _ := item.ValueCopy(nil); !bytes.HasPrefix(v, []byte("{")) {
				return fmt.Errorf("%q is not JSON: %q", k, v)
			}
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

	// The change log mixes both encodings; a follower replays it whole.
	dst := openFollower(t, j)
	evs := feedUntil(t, j, 0, func(ev Event) bool { return ev.Type == EventReady })
	if err := dst.Feed().ApplyAll(ctx, evs); err != nil {
		t.Fatal(err)
	}
	if log := feedUntil(t, j, 1, func(ev Event) bool { return ev.Pos == j.Position() }); len(log) != int(j.Position()-1) {
		t.Fatalf("change log from position 2: %d changes", len(log))
	}
	assertSameJournal(t, j, dst)
	if _, err := j.Housekeep(ctx); err != nil {
		t.Fatalf("housekeeping over JSON change-log entries: %v", err)
	}
}

// Texts that are not valid UTF-8 are stored as a JSON round trip makes
// them, as they always were: the replication feed carries records as JSON,
// and a follower's copy must equal the primary's.
func TestInvalidUTF8IsStoredAsTheFeedCarriesIt(t *testing.T) {
	dir := t.TempDir()
	o := testOptions(dir)
	o.Now = newFakeClock().Now
	src := openTest(t, dir, o)
	dst := openFollower(t, src)
	ctx := context.Background()
	r := accountRecord("uid=\xffbad,ou=people,dc=example,dc=org")
	r.Changes = append(r.Changes, Change{Op: "add", Attr: "cn", Values: []string{"caf\xe9", "ok"}})
	r.Groups = []string{"cn=\xc3,dc=x"}
	seq := mustPrepareCommit(t, src, r, "")
	got, err := src.Get(seq)
	if err != nil {
		t.Fatal(err)
	}
	if got.DN != "uid=\uFFFDbad,ou=people,dc=example,dc=org" || got.Changes[1].Values[0] != "caf\uFFFD" || got.Groups[0] != "cn=\uFFFD,dc=x" {
		t.Fatalf("stored %q %q %q", got.DN, got.Changes[1].Values, got.Groups)
	}
	if r.DN != "uid=\xffbad,ou=people,dc=example,dc=org" || r.Changes[1].Values[0] != "caf\xe9" {
		t.Fatal("Prepare changed the caller's record")
	}
	fctx, cancel := context.WithCancel(ctx)
	err = src.Feed().Stream(fctx, 0, func(ev Event) error {
		// As the replica sends it.
		b, err := json.Marshal(ev)
		if err != nil {
			return err
		}
		var wire Event
		if err := json.Unmarshal(b, &wire); err != nil {
			return err
		}
		if err := dst.Feed().Apply(ctx, wire); err != nil {
			return err
		}
		if ev.Pos == src.Position() && ev.Type != EventReset {
			cancel()
		}
		return nil
	})
	cancel()
	if err != nil {
		t.Fatal(err)
	}
	assertSameJournal(t, src, dst)
}
