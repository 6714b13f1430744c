package e2e

import (
	"errors"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/go-ldap/ldap/v3"

	"github.com/ldapgate/ldapgate/internal/ldapwire"
)

// TestRelayMessageIDReuseAfterAbandonGainsNoIdentity replays issue 16's
// "anonymous to admin" on fresh connections with random timing: an
// anonymous client sends a WhoAmI with message ID 2, an Abandon of 2 and
// a bind with ID 2 as the gateway's admin with a wrong password. The
// directory may still answer the WhoAmI with success; that answer must
// never be taken for the bind's. The bind gets invalidCredentials (or the
// session a protocolError for reusing an ID still reserved), and the
// session never holds the admin identity: neither in the directory's
// eyes (WhoAmI) nor in the gateway's (its own subtree, readable by the
// admin only, refuses it).
func TestRelayMessageIDReuseAfterAbandonGainsNoIdentity(t *testing.T) {
	// Every round fails a bind on purpose: the failed-bind limiter would
	// refuse the later ones before they reach the directory.
	e := newMirrorEnv(t, mirrorOptions{LogLevel: "info", Extra: []string{"--max-bind-failures", "0"}})
	requireSubtree(t, e)
	rounds := 300 // make soak: LDAPGATE_MSGID_ROUNDS=3000
	if testing.Short() {
		rounds = 50
	}
	if n, err := strconv.Atoi(os.Getenv("LDAPGATE_MSGID_ROUNDS")); err == nil && n > 0 {
		rounds = n
	}
	whoAmI := func(id int64) []byte {
		return ldapwire.AppendMessage(nil, id, ldapwire.AppendExtendedRequest(nil, ldapwire.OIDWhoAmI, nil))
	}
	abandon := ldapwire.AppendMessage(nil, 3, ldapwire.AppendInt(nil, ldapwire.TagAbandonRequest, 2))
	wrongBind := bindRequest(2, mirrorAdminDN, "not-the-admin-password")
	outcomes := map[string]int{}
	for round := range rounds {
		c := dialRaw(t, e.gw.URL)
		// Jitter, not synchronisation: it varies whether the directory's
		// answer to the WhoAmI comes before the Abandon, between the
		// Abandon and the bind, or after the bind.
		jitter := func() {
			if d := rand.IntN(4); d > 0 {
				time.Sleep(time.Duration(rand.IntN(300*d)) * time.Microsecond)
			}
		}
		c.send(t, whoAmI(2))
		jitter()
		c.send(t, abandon)
		jitter()
		c.send(t, wrongBind)

		closed := false
	answers:
		for {
			m, err := c.next(15 * time.Second)
			switch {
			case err != nil:
				if !isClosed(err) {
					t.Fatalf("round %d: waiting for the bind's answer: %v", round, err)
				}
				closed = true
				break answers
			case m.isNoticeOfDisconnection():
				if m.ResultCode != ldap.LDAPResultProtocolError {
					t.Fatalf("round %d: notice of disconnection %v, want protocolError", round, m)
				}
				outcomes["protocolError (ID still reserved)"]++
				closed = true
				break answers
			case m.ID == 2 && m.Op == ldap.ApplicationBindResponse:
				if m.ResultCode != ldap.LDAPResultInvalidCredentials && m.ResultCode != ldap.LDAPResultProtocolError {
					t.Fatalf("round %d: the wrong-password bind got %v", round, m)
				}
				outcomes["bind answered "+ldap.LDAPResultCodeMap[uint16(m.ResultCode)]]++
				break answers
			}
			// The WhoAmI's own answer (ID 2, an extended response) may
			// come first; it is not the bind's.
		}
		if closed {
			c.Close()
			continue
		}
		c.send(t, whoAmI(4))
		msgs := c.expectResult(t, 4, ldap.LDAPResultSuccess)
		if id := msgs[len(msgs)-1].ResponseValue; strings.Contains(strings.ToLower(id), "cn=admin") {
			t.Fatalf("round %d: the directory sees the session as %q", round, id)
		}
		c.send(t, searchRequest(t, 5, "cn=changelog", "(objectClass=*)", "1.1"))
		res := lastResult(t, c, 5)
		if res.ResultCode != ldap.LDAPResultInsufficientAccessRights {
			t.Fatalf("round %d: the gateway's own subtree answered %v to the session after a failed admin bind: it holds the admin identity", round, res)
		}
		c.Close()
	}
	t.Logf("%d rounds: %v", rounds, outcomes)
	e.requireAlive()
}

// lastResult reads until the final answer to id and returns it.
func lastResult(t *testing.T, c *rawConn, id int64) ldapMessage {
	t.Helper()
	for {
		m, err := c.next(15 * time.Second)
		if err != nil {
			t.Fatal(errors.Join(errors.New("waiting for the answer"), err))
		}
		if m.isNoticeOfDisconnection() {
			t.Fatalf("waiting for message %d: %v", id, m)
		}
		if m.ID == id && m.ResultCode >= 0 {
			return m
		}
	}
}
