package store

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"io"
	"os"
	"path/filepath"
	"testing"
)

// oldJournals unpacks testdata/journals-e429190.tar.gz: journals written
// by the journal code of commit e429190 (the main branch before a Commit
// was stored apart from its record), a gateway's own ("lone") and a
// cluster node's ("replicated"), each with its key file. Each holds, in
// sequence order, records delivered (1), dead (2), committed with an
// entry key and a name (3), committed with a sealed password (4) and
// prepared (5); the replicated one applied Raft entries 1 to 4.
func oldJournals(t *testing.T) string {
	t.Helper()
	f, err := os.Open(filepath.Join("testdata", "journals-e429190.tar.gz"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	tr := tar.NewReader(zr)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return dir
		}
		if err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(dir, filepath.FromSlash(h.Name))
		if h.Typeflag == tar.TypeDir {
			if err := os.MkdirAll(path, 0o700); err != nil {
				t.Fatal(err)
			}
			continue
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, b, os.FileMode(h.Mode)&0o600|0o600); err != nil {
			t.Fatal(err)
		}
	}
}

// checkOldRecords checks what a journal of oldJournals holds.
func checkOldRecords(t *testing.T, j *Journal) {
	t.Helper()
	want := []struct {
		state      State
		key, name  string
		secret     SecretState
		attempts   int
		lastErrSet bool
	}{
		{StateDelivered, "k-delivered", "", SecretNone, 1, false},
		{StateDead, "k-dead", "", SecretNone, 1, true},
		{StateCommitted, "k-committed", "committed", SecretNone, 0, false},
		{StateCommitted, "k-password", "", SecretEncrypted, 0, false},
		{StatePrepared, "", "", SecretNone, 0, false},
	}
	for i, w := range want {
		seq := uint64(i + 1)
		r, err := j.recs.getWithSecret(seq)
		if err != nil {
			t.Fatalf("record %d: %v", seq, err)
		}
		if r.State != w.state || r.EntryKey != w.key || r.Name != w.name || r.SecretState != w.secret ||
			r.Attempts != w.attempts || (r.LastError != "") != w.lastErrSet {
			t.Fatalf("record %d: %+v, want %+v", seq, r, w)
		}
		if w.secret == SecretEncrypted && string(r.Secret) != "s3cret-pw" {
			t.Fatalf("record %d: secret %q", seq, r.Secret)
		}
	}
	st, err := j.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if st.Prepared != 1 || st.Committed != 2 || st.Dead != 1 || st.Delivered != 1 {
		t.Fatalf("stats %+v", st)
	}
}

// TestOpensJournalOfPreviousMain: a journal written by the previous main
// (whole records, an empty a/ key beside each one not delivered) opens
// and reads as it was written; a Commit made now (stored apart from its
// record, see encodeCommit) reads back after a restart, and delivery
// takes every record, secret included.
func TestOpensJournalOfPreviousMain(t *testing.T) {
	dir := filepath.Join(oldJournals(t), "lone")
	o := testOptions(dir)
	j := openTest(t, dir, o)
	checkOldRecords(t, j)
	before := dump(t, j)
	if err := j.Commit(context.Background(), 5, "k-prepared"); err != nil {
		t.Fatal(err)
	}
	j.Close()

	j = openTest(t, dir, o)
	after := dump(t, j)
	for seq := uint64(1); seq <= 4; seq++ {
		if before[seq] != after[seq] {
			t.Fatalf("record %d after a restart:\n%s\nwas\n%s", seq, after[seq], before[seq])
		}
	}
	if r, err := j.Get(5); err != nil || r.State != StateCommitted || r.EntryKey != "k-prepared" {
		t.Fatalf("record 5 committed, after a restart: %+v, %v", r, err)
	}
	type delivery struct {
		seq    uint64
		secret string // copied: the journal clears the secret after delivery
	}
	got := make(chan delivery, 8)
	startRun(t, j, 2, DeliverFunc(func(_ context.Context, r *Record) error {
		got <- delivery{r.Seq, string(r.Secret)}
		return nil
	}))
	seen := map[uint64]string{}
	for len(seen) < 3 {
		d := <-got
		seen[d.seq] = d.secret
	}
	if _, ok := seen[3]; !ok || seen[4] != "s3cret-pw" {
		t.Fatalf("delivered %v", seen)
	}
	for _, seq := range []uint64{3, 4, 5} {
		waitState(t, j, seq, StateDelivered)
	}
	if r, _ := j.Get(4); r.SecretState != SecretErased {
		t.Fatalf("the password of a delivered record is %s", r.SecretState)
	}
}

// TestOpensReplicatedJournalOfPreviousMain: a cluster node's journal of
// the previous main opens at its applied index, applies the next entry,
// and its snapshot restores into a new node as the same journal.
func TestOpensReplicatedJournalOfPreviousMain(t *testing.T) {
	dir := filepath.Join(oldJournals(t), "replicated")
	o := testOptions(dir)
	o.Replicated = true
	j := openTest(t, dir, o)
	if j.AppliedIndex() != 4 || j.DeliveryTerm() != 1 {
		t.Fatalf("applied index %d, term %d", j.AppliedIndex(), j.DeliveryTerm())
	}
	checkOldRecords(t, j)
	var next uint64 = 5
	res, err := j.Apply(context.Background(), 5, stamped(t, j, &next, newFakeClock().Now(), Command{Op: CmdCommit, Seq: 5, EntryKey: "k-prepared"}))
	if err != nil || res[0] != nil {
		t.Fatalf("apply: %v, %v", res, err)
	}
	s, err := j.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	var snap bytes.Buffer
	_, err = s.WriteTo(&snap)
	s.Close()
	if err != nil {
		t.Fatal(err)
	}
	fresh := openReplicated(t, t.TempDir(), o.KeyFile)
	if err := fresh.Restore(&snap); err != nil {
		t.Fatal(err)
	}
	sameState(t, j, fresh)
	if r, err := fresh.Get(5); err != nil || r.State != StateCommitted || r.EntryKey != "k-prepared" {
		t.Fatalf("record 5 in the restored journal: %+v, %v", r, err)
	}
}
