package mirror

import (
	"context"
	"testing"

	"github.com/go-ldap/ldap/v3"

	"github.com/ldapgate/ldapgate/gateway"
)

// A session bound with SASL has no DN the gateway knows (the relay sets
// SASLMechanism, not BoundDN). It was judged as anonymous, and a password
// modify naming no entry — its own password — was relayed unjudged, with
// no journal record: the directory changed the password, Axigen kept the
// old one. It is now refused (53, asking to name the entry), and a write
// naming an account is refused as by someone the gateway cannot name, not
// as by "an anonymous session".
func TestSASLSessionIsNoOneInParticular(t *testing.T) {
	r := newPipelineRig(t)
	m, j, _ := r.mirror(t)
	ctx := context.Background()
	sasl := gateway.SessionInfo{ID: 1, RemoteAddr: "192.0.2.1:4711", SASLMechanism: "CRAM-MD5"}

	done, answer := m.Intercept(ctx, sasl, &gateway.WriteRequest{Op: gateway.OpPasswordModify, NewPassword: []byte("sasl-new-pw")})
	if done != nil {
		t.Fatal("a SASL session's own password change was relayed")
	}
	wantAnswer(t, answer, ldap.LDAPResultUnwillingToPerform, "name the entry in the request")

	_, answer = m.Intercept(ctx, sasl, replace(pipeUser("bob"), "telephoneNumber", "+1 555 6060"))
	wantAnswer(t, answer, ldap.LDAPResultInsufficientAccessRights, "a session bound with SASL CRAM-MD5")

	assertNoRecordEver(t, j)

	// A proxied identity is judged as ever: the directory checks that the
	// SASL identity may take it.
	proxied := replace(pipeUser("bob"), "telephoneNumber", "+1 555 6061")
	proxied.Controls = []gateway.Control{{OID: oidProxyAuthzV2, Critical: true, Value: []byte("dn:" + pipeAdminDN), HasValue: true}}
	done, answer = m.Intercept(ctx, sasl, proxied)
	wantAnswer(t, answer, 0, "")
	if done == nil {
		t.Fatal("the admin's proxied write was relayed with no record")
	}
	done(ctx, gateway.Result{Code: ldap.LDAPResultInsufficientAccessRights})
}
