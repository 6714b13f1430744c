package mirror

import (
	"context"
	"errors"
	"log/slog"
	"path/filepath"
	"testing"

	"github.com/go-ldap/ldap/v3"

	"github.com/ldapgate/ldapgate/gateway"
	"github.com/ldapgate/ldapgate/store"
)

// The replication hook runs only for writes the directory accepted, with
// the record's sequence number, once the record is on disk (what the
// standby must hold) and before the completion returns (before the client
// hears of the success); its error does not undo the write.
func TestWaitReplicatedOnlyOnSuccessWithTheRecordOnDisk(t *testing.T) {
	dir := t.TempDir()
	j, err := store.Open(filepath.Join(dir, "journal"), store.Options{NoSync: true, HousekeepingInterval: -1,
		Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { j.Close() })
	var calls []uint64
	m := &Mirror{log: slog.New(slog.DiscardHandler), cfg: Config{Journal: j, Audit: slog.New(slog.DiscardHandler),
		Replicator: replicatorFunc(func(_ context.Context, seq uint64) error {
			if _, err := j.Get(seq); err != nil {
				t.Errorf("record %d is not on disk when the hook runs: %v", seq, err)
			}
			calls = append(calls, seq)
			return errors.New("standby away")
		})}}
	ctx := context.Background()
	req := &gateway.WriteRequest{Op: gateway.OpModify, DN: "uid=a,ou=people,dc=example,dc=com"}
	for _, tc := range []struct {
		name     string
		res      gateway.Result
		wantCall bool
		want     store.State // "" for aborted (removed)
	}{
		{"success", gateway.Result{Code: ldap.LDAPResultSuccess}, true, store.StateCommitted},
		{"refused by the directory", gateway.Result{Code: ldap.LDAPResultNoSuchObject}, false, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			calls = nil
			rec := &store.Record{Kind: store.KindAccount, Op: store.OpModify, DN: req.DN}
			seq, err := j.Prepare(ctx, rec)
			if err != nil {
				t.Fatal(err)
			}
			rec.Seq = seq
			m.settle(ctx, &write{req: req, rec: rec}, tc.res)
			if got := len(calls) == 1; got != tc.wantCall {
				t.Fatalf("hook calls %v, want a call: %v", calls, tc.wantCall)
			}
			if tc.wantCall && calls[0] != seq {
				t.Fatalf("hook called for %d, want %d", calls[0], seq)
			}
			m.Close() // the commit or abort is settled
			r, err := j.Get(seq)
			switch {
			case tc.want == "" && !errors.Is(err, store.ErrNotFound):
				t.Fatalf("record %d: %v %v; want aborted", seq, r, err)
			case tc.want != "" && (err != nil || r.State != tc.want):
				t.Fatalf("record %d: %v %v; want %s", seq, r, err, tc.want)
			}
		})
	}
}

// replicatorFunc is a Replicator made of a function, for tests.
type replicatorFunc func(ctx context.Context, seq uint64) error

func (f replicatorFunc) WaitReplicated(ctx context.Context, seq uint64) error { return f(ctx, seq) }
