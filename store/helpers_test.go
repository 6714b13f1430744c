package store

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	badger "github.com/dgraph-io/badger/v4"
)

// fakeClock is a settable clock for Options.Now.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{t: time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// testOptions are quick options for unit tests: no fsync (the crash test
// covers durability), no background housekeeping, a quiet log.
func testOptions(dir string) Options {
	return Options{
		KeyFile:              filepath.Join(dir, "journal.key"),
		NoSync:               true,
		HousekeepingInterval: -1,
		Logger:               quietLogger(),
	}
}

func openTest(t *testing.T, dir string, opts Options) *Journal {
	t.Helper()
	j, err := Open(filepath.Join(dir, "journal"), opts)
	if err != nil {
		t.Fatalf("open journal: %v", err)
	}
	t.Cleanup(func() { j.Close() })
	return j
}

func newTestJournal(t *testing.T) (*Journal, string) {
	t.Helper()
	dir := t.TempDir()
	return openTest(t, dir, testOptions(dir)), dir
}

func accountRecord(dn string) *Record {
	return &Record{
		Actor:      "cn=admin,dc=example,dc=org",
		ClientAddr: "127.0.0.1:40000",
		Kind:       KindAccount,
		Op:         OpModify,
		DN:         dn,
		Changes:    []Change{{Op: "replace", Attr: "telephoneNumber", Values: []string{"+33 1 23 45 67 89"}}},
	}
}

// mustPrepareCommit journals and commits a record.
func mustPrepareCommit(t *testing.T, j *Journal, r *Record, entryKey string) uint64 {
	t.Helper()
	ctx := context.Background()
	seq, err := j.Prepare(ctx, r)
	if err != nil {
		t.Fatalf("prepare: %v", err)
	}
	if err := j.Commit(ctx, seq, entryKey); err != nil {
		t.Fatalf("commit %d: %v", seq, err)
	}
	return seq
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func waitState(t *testing.T, j *Journal, seq uint64, want State) *Record {
	t.Helper()
	var r *Record
	waitFor(t, fmt.Sprintf("record %d to be %s", seq, want), 30*time.Second, func() bool {
		var err error
		r, err = j.Get(seq)
		return err == nil && r.State == want
	})
	return r
}

// startRun runs delivery in the background until the test ends.
func startRun(t *testing.T, j *Journal, workers int, deliver DeliverFunc) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- j.Run(ctx, workers, deliver) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("run: %v", err)
		}
	})
}

// dump is every record a journal holds, as JSON, secrets decrypted.
func dump(t *testing.T, j *Journal) map[uint64]string {
	t.Helper()
	out := map[uint64]string{}
	recs, err := j.List(Filter{})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range recs {
		b, _ := json.Marshal(r)
		s := string(b)
		if r.SecretState == SecretEncrypted {
			full, err := j.recs.getWithSecret(r.Seq)
			if err != nil {
				t.Fatalf("secret of %d: %v", r.Seq, err)
			}
			s += " secret=" + string(full.Secret)
		}
		out[r.Seq] = s
	}
	return out
}

// indexKeys lists the index and secret keys, so that two states are
// compared index and all.
func indexKeys(t *testing.T, j *Journal) []string {
	t.Helper()
	var keys []string
	err := j.db.View(func(txn *badger.Txn) error {
		for _, p := range [][]byte{prefixActive, prefixDelivered, prefixSecret} {
			it := txn.NewIterator(badger.IteratorOptions{Prefix: p})
			for it.Rewind(); it.Valid(); it.Next() {
				keys = append(keys, fmt.Sprintf("%x", it.Item().Key()))
			}
			it.Close()
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return keys
}

// countKeys counts the keys under prefix.
func countKeys(t *testing.T, j *Journal, prefix []byte) int {
	t.Helper()
	n := 0
	err := j.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: prefix})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			n++
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// histories is the index's histories as sequence numbers, for the tests
// that compare two indexes.
func (x *index) histories() map[string][]uint64 {
	x.activate() // a passive index's histories are its records'
	m := make(map[string][]uint64, len(x.queues))
	for t, q := range x.queues {
		m[t] = slices.Clone(q.seqs)
	}
	return m
}
