package store

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"sync"
	"testing"
	"time"
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

// feedUntil collects what j.Feed().Stream sends after position after, up to the
// first event stop accepts.
func feedUntil(t *testing.T, j *Journal, after uint64, stop func(Event) bool) []Event {
	t.Helper()
	var evs []Event
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	err := j.Feed().Stream(ctx, after, func(ev Event) error {
		evs = append(evs, ev)
		if stop(ev) {
			cancel()
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return evs
}
