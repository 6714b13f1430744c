package e2e

// LDAP transactions (RFC 5805) through the gateway: a transaction's writes
// are queued one by one and applied together at its end, so each would be
// judged against a directory that is no longer the one they change. The
// gateway refuses the transaction control on any write in, at or above the
// account and group bases; writes wholly outside them keep it.

import (
	"testing"
	"time"

	ber "github.com/go-asn1-ber/asn1-ber"
	"github.com/go-ldap/ldap/v3"

	"github.com/ldapgate/ldapgate/internal/testenv/slapd"
)

// txnControl is RFC 5805's transaction specification control, critical,
// with its identifier as the value (present even when empty, as slapd's).
type txnControl struct{ id []byte }

func (c txnControl) GetControlType() string { return "1.3.6.1.1.21.2" }
func (c txnControl) String() string         { return "txn " + string(c.id) }
func (c txnControl) Encode() *ber.Packet {
	p := ber.Encode(ber.ClassUniversal, ber.TypeConstructed, ber.TagSequence, nil, "Control")
	p.AppendChild(ber.NewString(ber.ClassUniversal, ber.TypePrimitive, ber.TagOctetString, "1.3.6.1.1.21.2", "type"))
	p.AppendChild(ber.NewBoolean(ber.ClassUniversal, ber.TypePrimitive, ber.TagBoolean, true, "critical"))
	p.AppendChild(ber.NewString(ber.ClassUniversal, ber.TypePrimitive, ber.TagOctetString, string(c.id), "value"))
	return p
}

// txnStart starts a transaction and returns its identifier.
func txnStart(t *testing.T, c *ldap.Conn) []byte {
	t.Helper()
	res, err := c.Extended(ldap.NewExtendedRequest("1.3.6.1.1.21.1", nil))
	if err != nil {
		t.Fatalf("start transaction: %v", err)
	}
	if res.Value == nil {
		t.Fatal("start transaction: no identifier")
	}
	id := res.Value.ByteValue
	if len(id) == 0 && res.Value.Data != nil {
		id = res.Value.Data.Bytes()
	}
	return id
}

// txnEnd commits a transaction.
func txnEnd(c *ldap.Conn, id []byte) error {
	seq := ber.Encode(ber.ClassUniversal, ber.TypeConstructed, ber.TagSequence, nil, "txn end")
	seq.AppendChild(ber.NewString(ber.ClassUniversal, ber.TypePrimitive, ber.TagOctetString, string(id), "id"))
	_, err := c.Extended(ldap.NewExtendedRequest("1.3.6.1.1.21.3", seq))
	return err
}

func wantTxnRefused(t *testing.T, what string, err error) {
	t.Helper()
	if !ldap.IsErrorWithCode(err, ldap.LDAPResultUnwillingToPerform) {
		t.Fatalf("%s in a transaction: %v, want 53 from the gateway", what, err)
	}
	t.Logf("%s in a transaction: %v", what, err)
}

// TestAttackWriteTransactionMovesAnAccountIntoTheBase: carol, a directory
// administrator but no gateway admin, queues in one transaction an add of
// an inetOrgPerson below an empty unit outside the bases (relayed: nothing
// of the bases) and a modify DN moving that unit into ou=people. Were the
// move queued, the commit would make an account nobody judged, never
// journaled nor in Axigen. The move is refused; the add alone stays
// outside the bases.
func TestAttackWriteTransactionMovesAnAccountIntoTheBase(t *testing.T) {
	const staging = "ou=staging,dc=example,dc=com"
	e := newAttackEnv(t, "", []string{"dn: " + staging + "\nobjectClass: organizationalUnit\nou: staging\n"})
	e.waitMirrored(20*time.Second, false)
	carol := bindConn(t, e.gw.URL, userDN("carol"), slapd.CarolPassword)
	carol.SetTimeout(10 * time.Second)
	id := txnStart(t, carol)
	txn := []ldap.Control{txnControl{id}}
	a := accountAdd("uid=evil,"+staging, "evil")
	a.Controls = txn
	if err := carol.Add(a); err != nil {
		t.Fatalf("queue the add of uid=evil under %s (outside the bases): %v", staging, err)
	}
	mv := ldap.NewModifyDNRequest(staging, "ou=staging", true, mirrorAccountBase)
	mv.Controls = txn
	wantTxnRefused(t, "moving "+staging+" into the account base", carol.ModifyDN(mv))
	// Into an ancestor of the bases, and the bases themselves.
	for _, dn := range []string{"dc=example,dc=com", mirrorAccountBase, mirrorGroupBase} {
		m := ldap.NewModifyRequest(dn, txn)
		m.Replace("description", []string{"x"})
		wantTxnRefused(t, "a modify of "+dn, carol.Modify(m))
	}
	if err := txnEnd(carol, id); err != nil {
		t.Fatalf("commit: %v", err)
	}
	if e.directoryEntry("uid=evil,ou=staging,"+mirrorAccountBase) != nil {
		t.Fatal("carol (no gateway admin) created an account in the account base")
	}
	if e.directoryEntry("uid=evil,"+staging) == nil {
		t.Error("the transaction's write outside the bases was not made")
	}
	e.waitDrained(20*time.Second, false)
	e.waitMirrored(15*time.Second, false)
}

// TestAttackWriteTransactionRenamesInsideTheBase: in one transaction carol
// would swap two units inside ou=people (each move alone keeps every entry
// in the base) and then write the mail at a DN that names a non-account
// entry when queued and the account dan once the swap is applied. Each
// write is refused; nothing changes.
func TestAttackWriteTransactionRenamesInsideTheBase(t *testing.T) {
	const ouA, ouB = "ou=a," + mirrorAccountBase, "ou=b," + mirrorAccountBase
	e := newAttackEnv(t, "", []string{
		"dn: " + ouA + "\nobjectClass: organizationalUnit\nou: a\n",
		"dn: uid=dan," + ouA + "\nobjectClass: account\nuid: dan\n",
		"dn: " + ouB + "\nobjectClass: organizationalUnit\nou: b\n",
		"dn: uid=dan," + ouB + "\nobjectClass: inetOrgPerson\nuid: dan\ncn: Dan\nsn: D\nmail: dan@example.com\nuserPassword: dan-pw\n",
	})
	e.waitMirrored(20*time.Second, false)
	carol := bindConn(t, e.gw.URL, userDN("carol"), slapd.CarolPassword)
	carol.SetTimeout(10 * time.Second)
	id := txnStart(t, carol)
	txn := []ldap.Control{txnControl{id}}
	for _, mv := range [][2]string{{ouA, "ou=a-old"}, {ouB, "ou=a"}} {
		r := ldap.NewModifyDNRequest(mv[0], mv[1], true, "")
		r.Controls = txn
		wantTxnRefused(t, "renaming "+mv[0], carol.ModifyDN(r))
	}
	m := ldap.NewModifyRequest("uid=dan,"+ouA, txn)
	m.Replace("mail", []string{"carol-owns-dan@example.com"})
	wantTxnRefused(t, "the mail of uid=dan,"+ouA, carol.Modify(m))
	if err := txnEnd(carol, id); err != nil {
		t.Logf("commit of an empty transaction: %v", err)
	}
	if got := e.directoryEntry("uid=dan,"+ouB, "mail"); got == nil || got.GetAttributeValue("mail") != "dan@example.com" {
		t.Fatalf("dan's entry changed: %v", got)
	}
	e.waitDrained(20*time.Second, false)
	e.waitMirrored(15*time.Second, false)
}
