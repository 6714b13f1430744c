package store

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	badger "github.com/dgraph-io/badger/v4"
)

// The crash test re-runs this test binary as a child process (the
// environment variable below holds the data folder), which writes records
// from many goroutines and prints each acknowledgement:
//
//	P <seq> <id>   Prepare returned: the record must survive, intact
//	C <seq>        Commit returned: the record must stay committed (or later)
//	A <seq>        Abort returned: the record must stay gone
//
// The parent kills it with SIGKILL at a random moment, reopens the journal
// and checks every acknowledgement.
const (
	crashChildEnv  = "LDAPGATE_CRASH_CHILD"
	crashRoundsEnv = "LDAPGATE_CRASH_ROUNDS"
	crashWriters   = 32
)

func TestMain(m *testing.M) {
	if dir := os.Getenv(crashChildEnv); dir != "" {
		os.Exit(crashChild(dir))
	}
	if os.Getenv(idleChildEnv) != "" {
		os.Exit(idleChild())
	}
	os.Exit(m.Run())
}

func crashOptions(dir string) Options {
	return Options{
		KeyFile:              filepath.Join(dir, "journal.key"),
		HousekeepingInterval: -1,
		MaxAttempts:          3,
		BackoffBase:          time.Millisecond,
		BackoffCap:           5 * time.Millisecond,
		Logger:               quietLogger(),
	}
}

// crashIntent is what the child does with record n of goroutine g; the
// checker derives the same from the record's id.
type crashIntent struct {
	id       string
	dn       string
	secret   string
	abort    bool
	entryKey string
}

func intentFor(round, g, n int) crashIntent {
	id := fmt.Sprintf("r%d-g%d-n%d", round, g, n)
	user := (g*7 + n) % 50
	in := crashIntent{id: id, dn: fmt.Sprintf("uid=user%d,ou=people,dc=example,dc=org", user), abort: n%7 == 3}
	if n%3 == 0 {
		in.secret = "secret-" + id
	}
	if n%2 == 0 {
		in.entryKey = fmt.Sprintf("uuid-%d", user)
	}
	return in
}

func parseID(id string) (round, g, n int, err error) {
	_, err = fmt.Sscanf(id, "r%d-g%d-n%d", &round, &g, &n)
	return
}

func (in crashIntent) record() *Record {
	r := &Record{
		Actor: "cn=admin,dc=example,dc=org", ClientAddr: "127.0.0.1:1234",
		Kind: KindAccount, Op: OpModify, DN: in.dn,
		Changes: []Change{
			{Op: "replace", Attr: "description", Values: []string{in.id}},
			{Op: "add", Attr: "mail", Values: []string{in.id + "@example.org"}},
		},
		Note: "crash test " + in.id,
	}
	if in.secret != "" {
		r.Op, r.Secret = OpPassword, []byte(in.secret)
	}
	return r
}

func crashChild(dir string) int {
	round, _ := strconv.Atoi(os.Getenv("LDAPGATE_CRASH_ROUND"))
	j, err := Open(filepath.Join(dir, "journal"), crashOptions(dir))
	if err != nil {
		fmt.Printf("error open: %v\n", err)
		return 1
	}
	var out sync.Mutex
	say := func(format string, a ...any) {
		out.Lock()
		fmt.Fprintf(os.Stdout, format+"\n", a...)
		out.Unlock()
	}
	say("ready")
	ctx := context.Background()
	go j.Run(ctx, 4, DeliverFunc(func(context.Context, *Record) error {
		if rand.IntN(10) < 3 {
			return errors.New("simulated failure")
		}
		return nil
	}))
	var wg sync.WaitGroup
	for g := range crashWriters {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := 0; ; n++ {
				in := intentFor(round, g, n)
				seq, err := j.Prepare(ctx, in.record())
				if err != nil {
					say("error prepare: %v", err)
					return
				}
				say("P %d %s", seq, in.id)
				if in.abort {
					if err := j.Abort(ctx, seq); err != nil {
						say("error abort: %v", err)
						return
					}
					say("A %d", seq)
					continue
				}
				if err := j.Commit(ctx, seq, in.entryKey); err != nil {
					say("error commit: %v", err)
					return
				}
				say("C %d", seq)
			}
		}()
	}
	wg.Wait() // only on an error: the parent kills the child
	return 1
}

type crashAcks struct {
	prepared  map[uint64]string // seq -> id
	committed map[uint64]bool
	aborted   map[uint64]bool
}

func TestCrashRecoveryKeepsEveryAcknowledgedRecord(t *testing.T) {
	rounds := 3
	if s := os.Getenv(crashRoundsEnv); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			t.Fatalf("%s=%q: want a positive number", crashRoundsEnv, s)
		}
		rounds = n
	}
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d, %d rounds", seed, rounds)
	rnd := rand.New(rand.NewPCG(seed, 2))

	var dir string
	var acks crashAcks
	total := 0
	for round := range rounds {
		// A fresh journal every 10 rounds keeps the checks quick.
		if round%10 == 0 {
			dir = t.TempDir()
			acks = crashAcks{prepared: map[uint64]string{}, committed: map[uint64]bool{}, aborted: map[uint64]bool{}}
		}
		killAfter := 1 + rnd.IntN(3000) // acknowledgements before the kill
		if rnd.IntN(10) == 0 {
			killAfter = 0 // kill while the journal opens (replaying its log)
		}
		n := crashRound(t, dir, round, killAfter, &acks)
		total += n
		checkAfterCrash(t, dir, &acks)
		if t.Failed() {
			t.Fatalf("round %d (killed after %d acknowledgements) failed", round, n)
		}
	}
	t.Logf("%d rounds, %d acknowledgements checked", rounds, total)
}

// crashRound runs one child and kills it after killAfter acknowledgements.
func crashRound(t *testing.T, dir string, round, killAfter int, acks *crashAcks) int {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), crashChildEnv+"="+dir, "LDAPGATE_CRASH_ROUND="+strconv.Itoa(round))
	cmd.Stderr = os.Stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	killed := false
	kill := func() {
		if !killed {
			killed = true
			cmd.Process.Signal(syscall.SIGKILL)
		}
	}
	if killAfter == 0 {
		kill()
	}
	// Kill no matter what after a while, so a stuck child fails the test
	// instead of hanging it.
	watchdog := time.AfterFunc(60*time.Second, func() { cmd.Process.Signal(syscall.SIGKILL) })
	defer watchdog.Stop()

	n := 0
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 0 {
			continue
		}
		switch f[0] {
		case "ready":
		case "P", "C", "A":
			if len(f) < 2 || (f[0] == "P" && len(f) < 3) {
				t.Fatalf("child said %q", sc.Text())
			}
			seq, err := strconv.ParseUint(f[1], 10, 64)
			if err != nil {
				t.Fatalf("child said %q", sc.Text())
			}
			switch f[0] {
			case "P":
				acks.prepared[seq] = f[2]
			case "C":
				acks.committed[seq] = true
			case "A":
				acks.aborted[seq] = true
			}
			n++
			if n >= killAfter {
				kill()
			}
		default:
			if !killed {
				t.Errorf("child: %s", sc.Text())
			}
		}
	}
	// No line is cut short by the kill: each is one write of less than
	// PIPE_BUF bytes, which a pipe takes whole or not at all.
	io.Copy(io.Discard, stdout)
	err = cmd.Wait()
	if !killed {
		t.Fatalf("child ended by itself: %v", err)
	}
	return n
}

// checkAfterCrash reopens the journal and checks every acknowledgement and
// the journal's own consistency.
func checkAfterCrash(t *testing.T, dir string, acks *crashAcks) {
	t.Helper()
	j, err := Open(filepath.Join(dir, "journal"), crashOptions(dir))
	if err != nil {
		t.Fatalf("reopen after kill: %v", err)
	}
	defer j.Close()
	for seq, id := range acks.prepared {
		round, g, n, err := parseID(id)
		if err != nil {
			t.Fatalf("bad id %q", id)
		}
		in := intentFor(round, g, n)
		r, err := j.recs.getWithSecret(seq)
		if acks.aborted[seq] {
			if !errors.Is(err, ErrNotFound) {
				t.Errorf("record %d: abort acknowledged, yet it is there (%v)", seq, err)
			}
			continue
		}
		if errors.Is(err, ErrNotFound) && in.abort && !acks.committed[seq] {
			continue // its abort may have happened without being acknowledged
		}
		if err != nil {
			t.Errorf("record %d (%s): prepare acknowledged, but: %v", seq, id, err)
			continue
		}
		want := in.record()
		if r.DN != want.DN || r.Op != want.Op || r.Actor != want.Actor || r.Note != want.Note || !slices.EqualFunc(r.Changes, want.Changes, func(a, b Change) bool {
			return a.Op == b.Op && a.Attr == b.Attr && slices.Equal(a.Values, b.Values)
		}) {
			t.Errorf("record %d is not intact:\n got %+v\nwant %+v", seq, r, want)
		}
		if acks.committed[seq] && r.State == StatePrepared {
			t.Errorf("record %d: commit acknowledged, state %s", seq, r.State)
		}
		if acks.committed[seq] && in.entryKey != "" && r.EntryKey != in.entryKey {
			t.Errorf("record %d: entry key %q, want %q", seq, r.EntryKey, in.entryKey)
		}
		switch r.SecretState {
		case SecretEncrypted:
			if string(r.Secret) != in.secret {
				t.Errorf("record %d: secret %q, want %q", seq, r.Secret, in.secret)
			}
		case SecretErased:
			if r.State != StateDelivered {
				t.Errorf("record %d: secret erased, but state %s", seq, r.State)
			}
		default:
			if in.secret != "" {
				t.Errorf("record %d lost its secret", seq)
			}
		}
	}
	checkConsistent(t, j)
}

// checkConsistent checks the journal's invariants: counters ahead of the
// data, an index entry for each record, no change log (the former
// standby's is written no more).
func checkConsistent(t *testing.T, j *Journal) {
	t.Helper()
	counters := j.w.current()
	err := j.db.View(func(txn *badger.Txn) error {
		seqs := map[uint64]State{}
		it := txn.NewIterator(badger.IteratorOptions{Prefix: prefixRecord})
		for it.Rewind(); it.Valid(); it.Next() {
			var r *Record
			if err := it.Item().Value(func(v []byte) (err error) { r, err = decodeRecord(v); return }); err != nil {
				it.Close()
				return err
			}
			if r.Seq > counters.seq {
				t.Errorf("record %d beyond the sequence counter %d", r.Seq, counters.seq)
			}
			seqs[r.Seq] = r.State
		}
		it.Close()
		active := 0
		it = txn.NewIterator(badger.IteratorOptions{Prefix: prefixActive})
		for it.Rewind(); it.Valid(); it.Next() {
			seq := keyNum(prefixActive, it.Item().Key())
			if st, ok := seqs[seq]; !ok || st == StateDelivered {
				t.Errorf("active index names record %d (state %q)", seq, st)
			}
			active++
		}
		it.Close()
		notDelivered := 0
		for _, st := range seqs {
			if st != StateDelivered {
				notDelivered++
			}
		}
		if active != notDelivered {
			t.Errorf("active index has %d entries for %d records not delivered", active, notDelivered)
		}
		it = txn.NewIterator(badger.IteratorOptions{Prefix: prefixEvent})
		it.Rewind()
		if it.Valid() {
			t.Errorf("change-log entry %d written", keyNum(prefixEvent, it.Item().Key()))
		}
		it.Close()
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
