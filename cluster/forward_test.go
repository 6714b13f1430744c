package cluster

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/ldapgate/ldapgate/store"
)

// TestForwardFrameCarriesSecrets: a forwarded proposal keeps its
// commands and the plaintext secrets EncodeCommands leaves out; a frame
// cut short or padded is refused.
func TestForwardFrameCarriesSecrets(t *testing.T) {
	cmds := []store.Command{
		{Op: store.CmdPrepare, Record: &store.Record{Actor: "cn=admin", Kind: store.KindAccount, Op: store.OpPassword, DN: "uid=a,dc=x", Secret: []byte("s3cret")}},
		{Op: store.CmdCommit, Seq: 7, EntryKey: "k"},
		{Op: store.CmdPrepare, Record: &store.Record{Actor: "cn=admin", Kind: store.KindAccount, Op: store.OpModify, DN: "uid=b,dc=x"}},
	}
	b := encodeForward(1500*time.Millisecond, cmds)
	timeout, got, err := decodeForward(b)
	if err != nil {
		t.Fatal(err)
	}
	if timeout != 1500*time.Millisecond || len(got) != 3 {
		t.Fatalf("timeout %v, %d commands", timeout, len(got))
	}
	if string(got[0].Record.Secret) != "s3cret" || got[0].Record.DN != "uid=a,dc=x" || got[2].Record.Secret != nil {
		t.Fatalf("records: %+v %+v", got[0].Record, got[2].Record)
	}
	if got[1].Op != store.CmdCommit || got[1].Seq != 7 || got[1].EntryKey != "k" {
		t.Fatalf("commit: %+v", got[1])
	}
	for _, bad := range [][]byte{b[:len(b)-1], append(b[:len(b):len(b)], 0), b[:3]} {
		if _, _, err := decodeForward(bad); err == nil {
			t.Fatalf("a malformed frame of %d bytes decoded", len(bad))
		}
	}
}

// TestResultsKeepTheirErrors: refusals and the cluster's errors cross the
// network with errors.Is intact.
func TestResultsKeepTheirErrors(t *testing.T) {
	res := []Result{
		{Seq: 1},
		{Seq: 2, Err: fmt.Errorf("commit of 2: %w", store.ErrState)},
		{Seq: 3, Err: fmt.Errorf("outcome: %w", store.ErrStaleTerm)},
		{Seq: 4, Err: errors.New("something else")},
	}
	got, index, err := decodeResults(encodeResults(res, 42), len(res))
	if err != nil || index != 42 {
		t.Fatalf("decode: %v, index %d", err, index)
	}
	if got[0].Err != nil || got[0].Seq != 1 || !errors.Is(got[1].Err, store.ErrState) || !errors.Is(got[2].Err, store.ErrStaleTerm) ||
		got[3].Err == nil || got[3].Err.Error() != "something else" || got[1].Err.Error() != res[1].Err.Error() {
		t.Fatalf("results: %+v", got)
	}
	for _, sentinel := range []error{ErrNotLeader, ErrNoQuorum, ErrLeadershipLost, ErrOutcomeUnknown, ErrClosed, ErrWitness, store.ErrTooLarge, store.ErrNotFound} {
		f := errorFrame(1, fmt.Errorf("wrapped: %w", sentinel))
		_, err := answerOf(f)
		if !errors.Is(err, sentinel) {
			t.Fatalf("%v came back as %v", sentinel, err)
		}
		if (errors.Is(sentinel, store.ErrUnavailable)) != errors.Is(err, store.ErrUnavailable) {
			t.Fatalf("%v came back as %v: unavailable differs", sentinel, err)
		}
	}
	if _, err := answerOf(errorFrame(1, &NotLeaderError{LeaderID: "gw2"})); !errors.Is(err, ErrNotLeader) || !notApplied(err) {
		t.Fatalf("not leader came back as %v", err)
	}
}
