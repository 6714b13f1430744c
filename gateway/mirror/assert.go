package mirror

import (
	"context"
	"slices"

	"github.com/ldapgate/ldapgate/gateway"
	"github.com/ldapgate/ldapgate/internal/ldapwire"
)

// filterEqualityMatch is the tag of a Filter's equalityMatch choice
// (RFC 4511 4.5.1: [3], constructed).
const filterEqualityMatch = 0xa3

// entryAssertion returns the assertion control (RFC 4528) that makes the
// directory refuse w unless the entry at its DN is still the one the
// gateway read and judged it by (same stable key), for a gateway of a
// cluster: another gateway's rename may give the DN another entry between
// this gateway's read and its relay, and a password so written landed on
// that other entry while its record named the first, whose delivery then
// found no such password and sent none (the other account kept its old
// one: TestAttackClusterPasswordsRacingSwapsThroughOtherGateways). A lone
// gateway's writes to one entry are serialised (onWay). The directory's
// refusal (assertionFailed) reaches the client as busy (51: see the
// gateway's answers), the record is aborted, and a retry reads the entry
// again. ok is false when the write needs none or cannot carry one: no
// entry read, no key, the client's own assertion, a directory that does
// not support the control. The password modify extended operation gets a
// non-critical one: slapd refuses a critical assertion there (12) and
// ignores a non-critical one, so the journal orders that operation
// (clusterorder.go); a directory that honours it answers as for a modify.
func (m *Mirror) entryAssertion(ctx context.Context, w *write) (gateway.Control, bool) {
	req := w.req
	if !m.cfg.Journal.Replicated() || w.entry == nil || !appendable(req) {
		return gateway.Control{}, false
	}
	switch req.Op {
	case gateway.OpModify, gateway.OpModifyDN, gateway.OpDelete, gateway.OpPasswordModify:
	default:
		return gateway.Control{}, false
	}
	if slices.ContainsFunc(req.Controls, func(c gateway.Control) bool { return c.OID == gateway.OIDAssertion }) {
		return gateway.Control{}, false
	}
	attr := m.mapping().KeyAttribute()
	key, ok := w.entry.First(attr)
	if !ok || key == "" {
		return gateway.Control{}, false
	}
	if ok, err := m.cfg.Directory.SupportsControl(ctx, gateway.OIDAssertion); err != nil || !ok {
		return gateway.Control{}, false
	}
	ava := ldapwire.AppendTLV(nil, ldapwire.TagOctetString, []byte(attr))
	ava = ldapwire.AppendTLV(ava, ldapwire.TagOctetString, []byte(key))
	return gateway.Control{
		OID:      gateway.OIDAssertion,
		Critical: req.Op != gateway.OpPasswordModify,
		Value:    ldapwire.AppendTLV(nil, filterEqualityMatch, ava),
		HasValue: true,
	}, true
}
