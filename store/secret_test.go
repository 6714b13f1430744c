package store

import (
	"bytes"
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	badger "github.com/dgraph-io/badger/v4"
)

// grepDir lists the files under dir that contain needle.
func grepDir(t *testing.T, dir string, needle []byte) []string {
	t.Helper()
	var hits []string
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if bytes.Contains(data, needle) {
			hits = append(hits, path)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("search %s: %v", dir, err)
	}
	return hits
}

func TestSecretsAreEncryptedAtRestAndErasedOnDelivery(t *testing.T) {
	dir := t.TempDir()
	o := testOptions(dir)
	o.NoSync = false
	o.uncompressed = true // a compressed copy could hide from the search
	j := openTest(t, dir, o)
	ctx := context.Background()

	const password = "Tr0ub4dor&3-horse-battery"
	const canary = "canary-in-the-note-field"
	r := &Record{Kind: KindAccount, Op: OpPassword, DN: "uid=ann,dc=example,dc=org", Secret: []byte(password), Note: canary}
	seq, err := j.Prepare(ctx, r)
	if err != nil {
		t.Fatal(err)
	}
	if string(r.Secret) != password {
		t.Fatal("Prepare changed the caller's secret")
	}
	got, _ := j.Get(seq)
	if got.SecretState != SecretEncrypted || got.Secret != nil {
		t.Fatalf("stored record: secret state %q, secret %q", got.SecretState, got.Secret)
	}
	prepared, err := j.Prepared()
	if err != nil || len(prepared) != 1 || string(prepared[0].Secret) != password {
		t.Fatalf("Prepared() must hand recovery the plaintext: %v, %v", prepared, err)
	}

	// The search must be able to find what is there (the canary) ...
	if hits := grepDir(t, dir, []byte(canary)); len(hits) == 0 {
		t.Fatal("the canary is not found in the data folder: the search proves nothing")
	}
	// ... and finds no password.
	if hits := grepDir(t, dir, []byte(password)); len(hits) > 0 {
		t.Fatalf("plaintext password found in %v", hits)
	}

	if err := j.Commit(ctx, seq, ""); err != nil {
		t.Fatal(err)
	}
	var handed []byte
	startRun(t, j, 1, func(_ context.Context, r *Record) error {
		handed = append([]byte(nil), r.Secret...)
		return nil
	})
	got = waitState(t, j, seq, StateDelivered)
	if string(handed) != password {
		t.Fatalf("deliverer got secret %q, want the password", handed)
	}
	if got.SecretState != SecretErased {
		t.Fatalf("delivered record secret state %q, want erased", got.SecretState)
	}
	if sealed := readSealed(t, j, seq); sealed != nil {
		t.Fatal("the sealed secret is still in the journal after delivery")
	}
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}
	if hits := grepDir(t, dir, []byte(canary)); len(hits) == 0 {
		t.Fatal("after close the canary is not found: the search proves nothing")
	}
	if hits := grepDir(t, dir, []byte(password)); len(hits) > 0 {
		t.Fatalf("plaintext password found in %v after close", hits)
	}
}

func readSealed(t *testing.T, j *Journal, seq uint64) []byte {
	t.Helper()
	var sealed []byte
	err := j.db.View(func(txn *badger.Txn) error {
		var err error
		sealed, err = getSealed(txn, seq)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return sealed
}

func TestSecretDeliveryErrorsDoNotLeakThePassword(t *testing.T) {
	dir := t.TempDir()
	o := testOptions(dir)
	o.MaxAttempts = 1
	j := openTest(t, dir, o)
	const password = "s3cret-in-an-error"
	seq, _ := j.Prepare(context.Background(), &Record{Kind: KindAccount, Op: OpPassword, DN: "uid=a,dc=x", Secret: []byte(password)})
	j.Commit(context.Background(), seq, "")
	startRun(t, j, 1, func(_ context.Context, r *Record) error {
		return errors.New("axigen refused password " + string(r.Secret))
	})
	r := waitState(t, j, seq, StateDead)
	if strings.Contains(r.LastError, password) || !strings.Contains(r.LastError, "(secret)") {
		t.Fatalf("stored error %q", r.LastError)
	}
}

func TestKeyFileCreatedPrivateAndChecked(t *testing.T) {
	dir := t.TempDir()
	o := testOptions(dir)
	j, err := Open(filepath.Join(dir, "journal"), o)
	if err != nil {
		t.Fatal(err)
	}
	seq, err := j.Prepare(context.Background(), &Record{Kind: KindAccount, Op: OpPassword, DN: "uid=a,dc=x", Secret: []byte("pw")})
	if err != nil {
		t.Fatal(err)
	}
	j.Close()
	st, err := os.Stat(o.KeyFile)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode %v, want 0600", st.Mode().Perm())
	}

	// Reopened with the same key: the secret reads back.
	j, err = Open(filepath.Join(dir, "journal"), o)
	if err != nil {
		t.Fatal(err)
	}
	if p, err := j.Prepared(); err != nil || len(p) != 1 || p[0].Seq != seq || string(p[0].Secret) != "pw" {
		t.Fatalf("after reopen: %v, %v", p, err)
	}
	j.Close()

	// A missing key is an error, not a new key.
	keep, _ := os.ReadFile(o.KeyFile)
	os.Remove(o.KeyFile)
	if _, err := Open(filepath.Join(dir, "journal"), o); err == nil || !strings.Contains(err.Error(), "missing") {
		t.Fatalf("open without its key: %v", err)
	}
	if _, err := os.Stat(o.KeyFile); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("a new key was created for a journal that already had one")
	}

	// Another key is refused.
	if err := writeKeyFile(o.KeyFile, bytes.Repeat([]byte{7}, keyBytes)); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(filepath.Join(dir, "journal"), o); !errors.Is(err, ErrWrongKey) {
		t.Fatalf("open with another key: %v, want ErrWrongKey", err)
	}
	os.Remove(o.KeyFile)
	os.WriteFile(o.KeyFile, keep, 0o600)
	j, err = Open(filepath.Join(dir, "journal"), o)
	if err != nil {
		t.Fatalf("open with the key restored: %v", err)
	}
	j.Close()
}

func TestSecretRefusedWithoutKey(t *testing.T) {
	dir := t.TempDir()
	o := testOptions(dir)
	o.KeyFile = ""
	j := openTest(t, dir, o)
	_, err := j.Prepare(context.Background(), &Record{Kind: KindAccount, Op: OpPassword, DN: "uid=a,dc=x", Secret: []byte("pw")})
	if !errors.Is(err, ErrNoKey) {
		t.Fatalf("prepare with a secret and no key: %v, want ErrNoKey", err)
	}
}

func TestRetentionPurgesOldDeliveredRecords(t *testing.T) {
	clock := newFakeClock()
	dir := t.TempDir()
	o := testOptions(dir)
	o.Now = clock.Now
	o.Retention = 24 * time.Hour
	j := openTest(t, dir, o)
	ctx := context.Background()

	startRun(t, j, 2, func(context.Context, *Record) error { return nil })
	var old []uint64
	for i := range 300 { // more than one housekeeping chunk
		old = append(old, mustPrepareCommit(t, j, accountRecord("uid=old"+string(rune('a'+i%26))+",dc=x"), ""))
	}
	for _, s := range old {
		waitState(t, j, s, StateDelivered)
	}
	clock.Advance(20 * time.Hour)
	recent := mustPrepareCommit(t, j, accountRecord("uid=recent,dc=x"), "")
	waitState(t, j, recent, StateDelivered)
	pending, _ := j.Prepare(ctx, accountRecord("uid=pending,dc=x"))
	clock.Advance(5 * time.Hour) // the first 300 are now 25h old, the recent one 5h

	res, err := j.Housekeep(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if res.Purged != 300 {
		t.Fatalf("purged %d, want 300", res.Purged)
	}
	for _, s := range old {
		if _, err := j.Get(s); !errors.Is(err, ErrNotFound) {
			t.Fatalf("record %d older than retention: %v", s, err)
		}
	}
	if r, err := j.Get(recent); err != nil || r.State != StateDelivered {
		t.Fatalf("recent delivered record: %v, %v", r, err)
	}
	if r, err := j.Get(pending); err != nil || r.State != StatePrepared {
		t.Fatalf("pending record: %v, %v", r, err)
	}
	st, _ := j.Stats()
	if st.Delivered != 1 || st.Prepared != 1 {
		t.Fatalf("stats after purge: %+v", st)
	}
	// A second pass finds nothing more.
	if res, err := j.Housekeep(ctx); err != nil || res.Purged != 0 {
		t.Fatalf("second pass: %+v, %v", res, err)
	}
}
