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

// The replication hook runs only for writes the directory accepted, once
// their record is journaled (what the standby must hold: a record still
// prepared there is settled at takeover as at recovery) and before the
// completion returns (before the client hears of the success); its error
// does not undo the write.
func TestWaitReplicatedAfterCommitOnlyOnSuccess(t *testing.T) {
	dir := t.TempDir()
	j, err := store.Open(filepath.Join(dir, "journal"), store.Options{NoSync: true, HousekeepingInterval: -1,
		Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { j.Close() })
	type call struct {
		seq   uint64
		state store.State
	}
	var calls []call
	m := &Mirror{log: slog.New(slog.DiscardHandler), cfg: Config{Journal: j,
		WaitReplicated: func(_ context.Context, seq uint64) error {
			r, err := j.Get(seq)
			if err != nil {
				t.Errorf("record %d: %v", seq, err)
				return err
			}
			calls = append(calls, call{seq, r.State})
			return errors.New("standby away")
		}}}
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
			m.complete(ctx, rec, req, tc.res)
			m.Close() // the commit or abort settles in the background
			if got := len(calls) == 1; got != tc.wantCall {
				t.Fatalf("hook calls %v, want a call: %v", calls, tc.wantCall)
			}
			if tc.wantCall && (calls[0].seq != seq || calls[0].state != store.StatePrepared && calls[0].state != store.StateCommitted) {
				t.Fatalf("hook saw %+v; want record %d journaled", calls[0], seq)
			}
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
