package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ldapgate/ldapgate/store"
)

const testPassword = "Sup3r-S3cret-pw"

// journalFixture builds a stopped gateway's data folder whose journal holds
// one record in each situation, and returns the folder and the records'
// sequence numbers.
func journalFixture(t *testing.T) (string, map[string]uint64) {
	t.Helper()
	dataDir := t.TempDir()
	j, err := store.Open(journalDir(dataDir), store.Options{
		KeyFile:              journalKeyFile(dataDir),
		MaxAttempts:          1,
		HousekeepingInterval: -1,
		Logger:               slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	seqs := map[string]uint64{}
	add := func(name string, r *store.Record, commit bool) {
		seq, err := j.Prepare(ctx, r)
		if err != nil {
			t.Fatal(err)
		}
		if commit {
			if err := j.Commit(ctx, seq, "uuid-"+name); err != nil {
				t.Fatal(err)
			}
		}
		seqs[name] = seq
	}
	add("prepared", &store.Record{Kind: store.KindAccount, Op: store.OpPassword, DN: "uid=pat,ou=people,dc=example,dc=org",
		Actor: "uid=pat,ou=people,dc=example,dc=org", Secret: []byte(testPassword)}, false)
	add("delivered", &store.Record{Kind: store.KindAccount, Op: store.OpPassword, DN: "uid=dee,ou=people,dc=example,dc=org",
		Secret: []byte(testPassword)}, true)
	add("dead", &store.Record{Kind: store.KindGroup, Op: store.OpModify, DN: "cn=staff,ou=groups,dc=example,dc=org",
		Changes: []store.Change{{Op: "add", Attr: "member", Values: []string{"uid=x,dc=example,dc=org", "uid=y,dc=example,dc=org"}}}}, true)

	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error)
	go func() {
		done <- j.Run(runCtx, 2, store.DeliverFunc(func(_ context.Context, r *store.Record) error {
			if r.Seq == seqs["dead"] {
				return errors.New("axigen: group quota exceeded")
			}
			return nil
		}))
	}()
	deadline := time.Now().Add(10 * time.Second)
	for {
		st, err := j.Stats()
		if err != nil {
			t.Fatal(err)
		}
		if st.Delivered == 1 && st.Dead == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("fixture deliveries did not settle: %+v", st)
		}
		time.Sleep(5 * time.Millisecond)
	}
	stop()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	// Committed after delivery stopped: it waits.
	add("waiting", &store.Record{Kind: store.KindAccount, Op: store.OpRename, DN: "uid=old,ou=people,dc=example,dc=org",
		NewDN: "uid=new,ou=people,dc=example,dc=org"}, true)
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}
	return dataDir, seqs
}

// runCLI runs ldapgate with args and returns its output and error output.
func runCLI(t *testing.T, args ...string) (string, string, error) {
	t.Helper()
	app := newApp(journalCommand())
	var out, errOut bytes.Buffer
	app.Writer, app.ErrWriter = &out, &errOut
	err := app.Run(append([]string{"ldapgate"}, args...))
	return out.String(), errOut.String(), err
}

func mustRunCLI(t *testing.T, args ...string) string {
	t.Helper()
	out, errOut, err := runCLI(t, args...)
	if err != nil {
		t.Fatalf("ldapgate %s: %v\n%s", strings.Join(args, " "), err, errOut)
	}
	return out
}

func TestJournalLsListsRecordsAsATable(t *testing.T) {
	dataDir, seqs := journalFixture(t)
	out := mustRunCLI(t, "journal", "--data-dir", dataDir, "ls")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 5 || !strings.HasPrefix(lines[0], "SEQ") {
		t.Fatalf("ls printed:\n%s", out)
	}
	for name, want := range map[string]string{
		"prepared":  "upstream outcome unknown",
		"delivered": "delivered 20",
		"dead":      "axigen: group quota exceeded",
		"waiting":   "uid=old,ou=people,dc=example,dc=org -> uid=new,ou=people,dc=example,dc=org",
	} {
		line := lines[seqs[name]] // records are listed in sequence order, after the header
		if !strings.HasPrefix(line, itoa(seqs[name])+" ") || !strings.Contains(line, want) {
			t.Errorf("ls line of the %s record %q lacks %q", name, line, want)
		}
	}
	if strings.Contains(out, testPassword) {
		t.Fatal("ls shows a password")
	}

	dead := mustRunCLI(t, "journal", "ls", "--data-dir", dataDir, "--dead")
	if got := strings.Split(strings.TrimSpace(dead), "\n"); len(got) != 2 || !strings.Contains(got[1], " dead ") {
		t.Fatalf("ls --dead printed:\n%s", dead)
	}
	two := mustRunCLI(t, "journal", "ls", "--data-dir", dataDir, "--state", "committed,prepared")
	if got := strings.Split(strings.TrimSpace(two), "\n"); len(got) != 3 {
		t.Fatalf("ls --state committed,prepared printed:\n%s", two)
	}
	newest := mustRunCLI(t, "journal", "ls", "--data-dir", dataDir, "--limit", "1")
	if !strings.Contains(newest, "(the newest 1 of 4; --limit 0 shows all)") {
		t.Fatalf("ls --limit 1 printed:\n%s", newest)
	}

	var recs []store.Record
	if err := json.Unmarshal([]byte(mustRunCLI(t, "journal", "ls", "--data-dir", dataDir, "--json")), &recs); err != nil {
		t.Fatal(err)
	}
	if len(recs) != 4 || recs[0].Seq != seqs["prepared"] || recs[0].SecretState != store.SecretEncrypted {
		t.Fatalf("ls --json: %+v", recs)
	}
	if _, _, err := runCLI(t, "journal", "ls", "--data-dir", dataDir, "--state", "lost"); err == nil || !strings.Contains(err.Error(), "unknown state") {
		t.Fatalf("ls --state lost: %v", err)
	}
}

func TestJournalShowNeverShowsSecrets(t *testing.T) {
	dataDir, seqs := journalFixture(t)
	for name, want := range map[string][]string{
		"prepared":  {"state:", "prepared", "secret:", "(password, encrypted)", "actor:", "uid=pat"},
		"delivered": {"(erased)", "delivered:"},
		"dead":      {"dead", "last error:", "axigen: group quota exceeded", "add", "member: uid=x,dc=example,dc=org; uid=y,dc=example,dc=org"},
		"waiting":   {"new dn:", "uid=new,ou=people,dc=example,dc=org", "entry key:", "uuid-waiting"},
	} {
		out := mustRunCLI(t, "journal", "--data-dir", dataDir, "show", itoa(seqs[name]))
		for _, w := range want {
			if !strings.Contains(out, w) {
				t.Errorf("show of the %s record lacks %q:\n%s", name, w, out)
			}
		}
		js := mustRunCLI(t, "journal", "--data-dir", dataDir, "show", "--json", itoa(seqs[name]))
		var r store.Record
		if err := json.Unmarshal([]byte(js), &r); err != nil || r.Seq != seqs[name] {
			t.Errorf("show --json of %s: %v\n%s", name, err, js)
		}
		if strings.Contains(out+js, testPassword) {
			t.Fatalf("show of the %s record reveals the password", name)
		}
	}
	if _, _, err := runCLI(t, "journal", "--data-dir", dataDir, "show", "999"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("show of a missing record: %v", err)
	}
	if _, _, err := runCLI(t, "journal", "--data-dir", dataDir, "show", "x"); err == nil {
		t.Fatal("show accepted a bad sequence number")
	}
}

func itoa(n uint64) string { return strconv.FormatUint(n, 10) }

func TestJournalStatsCountsAndBacklog(t *testing.T) {
	dataDir, seqs := journalFixture(t)
	out := mustRunCLI(t, "journal", "--data-dir", dataDir, "stats")
	for _, w := range []string{"prepared        1", "committed       1", "delivered       1", "dead            1", "backlog         1", "record " + itoa(seqs["waiting"])} {
		if !strings.Contains(out, w) {
			t.Errorf("stats lacks %q:\n%s", w, out)
		}
	}
	var st statsJSON
	if err := json.Unmarshal([]byte(mustRunCLI(t, "journal", "--data-dir", dataDir, "stats", "--json")), &st); err != nil {
		t.Fatal(err)
	}
	if st.Prepared != 1 || st.Committed != 1 || st.Delivered != 1 || st.Dead != 1 || st.Backlog != 1 ||
		st.OldestPendingSeq != seqs["waiting"] || st.OldestPendingSeconds < 0 || st.LastSeq != 4 {
		t.Fatalf("stats --json: %+v", st)
	}
}

func TestJournalRetryAndDrop(t *testing.T) {
	dataDir, seqs := journalFixture(t)
	out := mustRunCLI(t, "journal", "--data-dir", dataDir, "retry", itoa(seqs["dead"]))
	if !strings.Contains(out, "will be delivered when the gateway starts") {
		t.Fatalf("retry printed %q", out)
	}
	show := mustRunCLI(t, "journal", "--data-dir", dataDir, "show", itoa(seqs["dead"]))
	if !strings.Contains(show, "committed") || !strings.Contains(show, "attempts:     0") {
		t.Fatalf("after retry:\n%s", show)
	}
	if _, errOut, err := runCLI(t, "journal", "--data-dir", dataDir, "retry", itoa(seqs["delivered"])); err == nil || !strings.Contains(errOut, "only dead or committed") {
		t.Fatalf("retry of a delivered record: %v, %q", err, errOut)
	}
	// A prepared record's write may have been made and acknowledged: it is
	// the gateway's to settle, never dropped.
	if _, errOut, err := runCLI(t, "journal", "--data-dir", dataDir, "drop", itoa(seqs["dead"]), itoa(seqs["prepared"])); err == nil ||
		!strings.Contains(errOut, "is prepared") {
		t.Fatalf("drop of a dead and a prepared record: %v, %q; want the prepared one refused", err, errOut)
	}
	var recs []store.Record
	json.Unmarshal([]byte(mustRunCLI(t, "journal", "--data-dir", dataDir, "ls", "--json")), &recs)
	if len(recs) != 3 || recs[0].Seq != seqs["prepared"] || recs[1].Seq != seqs["delivered"] || recs[2].Seq != seqs["waiting"] {
		t.Fatalf("after drop: %+v", recs)
	}
	if _, _, err := runCLI(t, "journal", "--data-dir", dataDir, "drop", itoa(seqs["delivered"])); err == nil {
		t.Fatal("drop of a delivered record succeeded")
	}
}

func TestJournalRetryAllDead(t *testing.T) {
	dataDir, _ := journalFixture(t)
	mustRunCLI(t, "journal", "--data-dir", dataDir, "retry", "--all-dead")
	out := mustRunCLI(t, "journal", "--data-dir", dataDir, "ls", "--dead")
	if strings.TrimSpace(out) != "no records" {
		t.Fatalf("dead letters left after retry --all-dead:\n%s", out)
	}
}

func TestJournalRefusesAJournalInUse(t *testing.T) {
	dataDir, _ := journalFixture(t)
	j, err := store.Open(journalDir(dataDir), store.Options{HousekeepingInterval: -1, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	for _, sub := range []string{"ls", "stats"} {
		_, _, err := runCLI(t, "journal", "--data-dir", dataDir, sub)
		// The holder may be a gateway starting or another journal command:
		// the message names the journal and says to try again.
		want := "the journal is in use by another process (" + filepath.Join(dataDir, "journal") + ") and no gateway answers"
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("%s on a journal in use: %v; want it to say %q", sub, err, want)
		}
	}
}

func TestJournalDataDirFromFlagOrEnvironment(t *testing.T) {
	dataDir, _ := journalFixture(t)
	empty := t.TempDir()

	t.Setenv("LDAPGATE_DATA_DIR", dataDir)
	if out := mustRunCLI(t, "journal", "stats"); !strings.Contains(out, "dead            1") {
		t.Fatalf("stats with LDAPGATE_DATA_DIR:\n%s", out)
	}
	// A flag, before or after the subcommand, beats the environment.
	for _, args := range [][]string{{"journal", "--data-dir", empty, "stats"}, {"journal", "stats", "--data-dir", empty}} {
		_, _, err := runCLI(t, args...)
		if !errors.Is(err, store.ErrNoJournal) {
			t.Fatalf("%v: %v, want no journal in %s", args, err, empty)
		}
	}
}
