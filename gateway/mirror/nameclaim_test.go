package mirror

import (
	"context"
	"testing"

	"github.com/go-ldap/ldap/v3"

	"github.com/ldapgate/ldapgate/gateway"
)

// Two adds giving one account name, racing: the directory shows neither
// while both are on their way, so its search let both through, and the
// second took over the first's Axigen account. The second is answered
// busy (51) until the first is answered; then the directory's search
// decides.
func TestNameClaimedByAWriteOnItsWay(t *testing.T) {
	r := newPipelineRig(t)
	m, _, _ := r.mirror(t)
	ctx := context.Background()
	first, answer := intercept(ctx, m, pipeAdminDN, addAccount("dave"))
	wantAnswer(t, answer, 0, "")
	if first == nil {
		t.Fatal("the first add has no completion")
	}
	second := addAccount("dave")
	second.DN = "cn=Dave Two,ou=people," + pipeSuffix
	_, answer = intercept(ctx, m, pipeAdminDN, second)
	wantAnswer(t, answer, ldap.LDAPResultBusy, `the account name "dave" is on its way`)
	// A group of the name too: accounts and groups share Axigen's names.
	group := &gateway.WriteRequest{Op: gateway.OpAdd, DN: "cn=dave,ou=groups," + pipeSuffix, Attributes: []gateway.Attribute{
		{Type: "objectClass", Values: [][]byte{[]byte("groupOfNames")}},
		{Type: "cn", Values: [][]byte{[]byte("dave")}},
		{Type: "member", Values: [][]byte{[]byte(pipeUser("alice"))}},
	}}
	_, answer = intercept(ctx, m, pipeAdminDN, group)
	wantAnswer(t, answer, ldap.LDAPResultBusy, `the group name "dave" is on its way`)

	// The first was refused by the directory: the name is free again.
	first(ctx, gateway.Result{Code: ldap.LDAPResultEntryAlreadyExists})
	done, answer := intercept(ctx, m, pipeAdminDN, second)
	wantAnswer(t, answer, 0, "")
	done(ctx, gateway.Result{Code: ldap.LDAPResultOther})

	// A write that is refused after it claimed (by the journal, say) or
	// not mirrored gives the name back too: a third add claims it.
	done, answer = intercept(ctx, m, pipeAdminDN, addAccount("dave"))
	wantAnswer(t, answer, 0, "")
	done(ctx, gateway.Result{Unanswered: true})
	done, answer = intercept(ctx, m, pipeAdminDN, addAccount("dave"))
	wantAnswer(t, answer, 0, "")
	done(ctx, gateway.Result{Code: ldap.LDAPResultOther})
}
