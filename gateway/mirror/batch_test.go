package mirror

import (
	"context"
	"encoding/json"
	"errors"
	"regexp"
	"strings"
	"testing"

	"github.com/ldapgate/ldapgate/integration/axigen"
	"github.com/ldapgate/ldapgate/store"
)

// deliveryLines are the audit log's delivery lines, by record.
func deliveryLines(audit string) map[uint64]string {
	out := map[uint64]string{}
	for _, l := range strings.Split(audit, "\n") {
		var e struct {
			Msg     string
			Seq     uint64
			Outcome string
		}
		if json.Unmarshal([]byte(l), &e) == nil && e.Msg == "delivery" {
			out[e.Seq] = e.Outcome
		}
	}
	return out
}

// TestDeliverBatchGivesEachRecordItsOwnOutcome: records of different
// entries delivered together each end as they would alone — an update, a
// creation, an account whose Axigen command fails (only it fails) — with
// an audit line each; a fenced deliverer whose guard refuses sends
// nothing at all.
func TestDeliverBatchGivesEachRecordItsOwnOutcome(t *testing.T) {
	r := newDeleteRig(t, Deletes{})
	r.putAccount("alice", "alice-old", true)
	r.putAccount("carol", "carol-old", true)
	for _, uid := range []string{"alice", "bob", "carol"} {
		r.ldif("dn: " + pipeUser(uid) + "\nchangetype: modify\nreplace: displayName\ndisplayName: nick-" + uid + "\n")
	}
	r.rig.sim.FailMatching(regexp.MustCompile(`^UPDATE Account name "carol"$`), "Permission denied")
	var recs []*store.Record
	for i, uid := range []string{"alice", "bob", "carol"} {
		recs = append(recs, &store.Record{Seq: uint64(200 + i), Kind: store.KindAccount, Op: store.OpModify,
			DN: pipeUser(uid), EntryKey: r.key(pipeUser(uid)), Name: uid,
			Changes: []store.Change{{Op: "replace", Attr: "displayName"}}})
	}

	fenced := fencedDeliverer{deliverer{r.m}, func(context.Context) error { return errors.New("deposed") }}
	before := len(r.rig.sim.Commands())
	for i, err := range fenced.DeliverBatch(context.Background(), recs) {
		if err == nil || !strings.Contains(err.Error(), "no longer leads") {
			t.Errorf("record %d through a refusing guard: %v", i, err)
		}
	}
	if n := len(r.rig.sim.Commands()) - before; n != 0 {
		t.Errorf("a refusing guard let %d commands through", n)
	}
	if lines := deliveryLines(r.audit.String()); len(lines) != 0 {
		t.Errorf("deliveries the guard refused were audited as attempts: %v", lines)
	}

	errs := deliverer{r.m}.DeliverBatch(context.Background(), recs)
	if errs[0] != nil || errs[1] != nil {
		t.Fatalf("alice, bob: %v, %v", errs[0], errs[1])
	}
	if axigen.KindOf(errs[2]) != axigen.KindServer || store.IsPermanent(errs[2]) {
		t.Errorf("carol: %v, want a retryable server error", errs[2])
	}
	for _, uid := range []string{"alice", "bob"} {
		if a, ok := r.account(uid); !ok || a.Contact["nickName"] != "nick-"+uid {
			t.Errorf("%s in Axigen: %+v, %v", uid, a, ok)
		}
	}
	if a, _ := r.account("carol"); a.Contact["nickName"] != "" {
		t.Errorf("carol changed although her command failed: %+v", a)
	}
	lines := deliveryLines(r.audit.String())
	for seq, want := range map[uint64]string{200: "delivered", 201: "delivered", 202: "failed"} {
		if lines[seq] != want {
			t.Errorf("audit delivery line of %d: %q, want %q (all: %v)", seq, lines[seq], want, lines)
		}
	}
}
