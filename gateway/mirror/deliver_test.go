package mirror

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/go-ldap/ldap/v3"

	"github.com/ldapgate/ldapgate/gateway"
	"github.com/ldapgate/ldapgate/integration/axigensim"
	"github.com/ldapgate/ldapgate/internal/testenv/slapd"
	"github.com/ldapgate/ldapgate/schema"
	"github.com/ldapgate/ldapgate/store"
)

// A modify is left to a delivery of an earlier record of its entry only
// when delivering the entry's state is all it needs.
func TestCoveredModifies(t *testing.T) {
	ad, err := schema.NewMapping(schema.Config{
		Dialect:     schema.ActiveDirectory,
		AccountBase: schema.DNList{"cn=Users,dc=corp,dc=example,dc=com"},
		GroupBase:   schema.DNList{"cn=Users,dc=corp,dc=example,dc=com"},
	})
	if err != nil {
		t.Fatal(err)
	}
	m := &Mirror{}
	m.policy.Store(&Policy{Mapping: ad})
	modify := func(attrs ...string) *store.Record {
		r := &store.Record{Op: store.OpModify, Kind: store.KindAccount}
		for _, a := range attrs {
			r.Changes = append(r.Changes, store.Change{Op: "replace", Attr: a})
		}
		return r
	}
	withSecret := modify("unicodePwd")
	withSecret.Secret = []byte("n3w")
	tests := []struct {
		name string
		rec  *store.Record
		want bool
	}{
		{"phone", modify("telephoneNumber"), true},
		{"names and phone", modify("givenName", "sn", "telephoneNumber"), true},
		{"disabling", modify("telephoneNumber", "userAccountControl"), false},
		{"new mail: groups list it", modify("mail"), false},
		{"password", withSecret, false},
		{"rename", &store.Record{Op: store.OpRename, Kind: store.KindAccount}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := m.covered(tt.rec); got != tt.want {
				t.Fatalf("covered = %v, want %v", got, tt.want)
			}
		})
	}
}

// Finding 8: a record of a password change keeps whether it named values,
// never the values: a delete of one value is told from a delete of all.
func TestRecordPasswordValuesNamedNotKept(t *testing.T) {
	mp, err := schema.NewMapping(schema.Config{Dialect: schema.OpenLDAP, AccountBase: schema.DNList{"ou=people,dc=example,dc=com"}})
	if err != nil {
		t.Fatal(err)
	}
	m := &Mirror{}
	m.policy.Store(&Policy{Mapping: mp})
	dn := "uid=alice,ou=people,dc=example,dc=com"
	req := &gateway.WriteRequest{Op: gateway.OpModify, DN: dn, Changes: []gateway.Modification{
		{Op: gateway.ModDelete, Attribute: gateway.Attribute{Type: "userPassword", Values: [][]byte{[]byte("{SSHA}old-hash")}}},
		{Op: gateway.ModDelete, Attribute: gateway.Attribute{Type: "userPassword"}},
	}}
	rec, err := m.record(&write{req: req, target: dn, kind: schema.KindAccount}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(rec.Changes) != 2 || !slices.Equal(rec.Changes[0].Values, []string{passwordValuesNamed}) || len(rec.Changes[1].Values) != 0 {
		t.Fatalf("changes %+v; want the first marked as naming values, the second not", rec.Changes)
	}
	if strings.Contains(fmt.Sprint(rec), "old-hash") {
		t.Fatal("the record holds the password value")
	}
	rec.Changes = rec.Changes[:1]
	if got := m.passwordChangeOf(rec); got != passwordValuesDeleted {
		t.Fatalf("a delete of one value: %v, want values deleted (the entry tells at delivery)", got)
	}
}

// Issue 16, item 9: a value Axigen cannot take, written in the directory
// behind the gateway's back (a displayName of 300 characters, straight
// into slapd), does not hold up the entry's later changes: the admin's
// password reset through the gateway reaches Axigen with the phone
// written alongside the long value, the nickName stays as Axigen had it
// (neither the long value nor cleared), and the record is delivered with
// what was left out in its LastError and in the audit line. The next
// change of the entry is delivered too.
func TestDeliveryLeavesOutAValueAxigenCannotTake(t *testing.T) {
	rig := newPipelineRig(t)
	m, j, audit := rig.mirror(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	delivering := make(chan error, 1)
	go func() { delivering <- m.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-delivering; err != nil && !errors.Is(err, context.Canceled) {
			t.Errorf("Run: %v", err)
		}
	}()
	rig.sim.PutAccount(pipeDomain, axigensim.AccountState{Name: "alice", Password: slapd.AlicePassword,
		Contact: map[string]string{"nickName": "Al", "phone": "+1 555 0101"}})

	alice := pipeUser("alice")
	conn, err := rig.dir.AdminConn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	behind := ldap.NewModifyRequest(alice, nil)
	behind.Replace("displayName", []string{strings.Repeat("x", schema.MaxShortValue+45)})
	behind.Replace("telephoneNumber", []string{"+1 555 0142"})
	if err := conn.Modify(behind); err != nil {
		t.Fatalf("write the long displayName straight into slapd: %v", err)
	}

	// relay does what the gateway does with a write Intercept let pass.
	relay := func(req *gateway.WriteRequest) uint64 {
		t.Helper()
		done, answer := intercept(ctx, m, pipeAdminDN, req)
		wantAnswer(t, answer, 0, "")
		prepared, err := j.Prepared()
		if err != nil || len(prepared) != 1 {
			t.Fatalf("prepared: %d, %v; want 1", len(prepared), err)
		}
		mod := ldap.NewModifyRequest(req.DN, nil)
		for _, c := range req.Changes {
			var vals []string
			for _, v := range c.Values {
				vals = append(vals, string(v))
			}
			mod.Replace(c.Type, vals)
		}
		if err := conn.Modify(mod); err != nil {
			t.Fatalf("the directory refuses the write: %v", err)
		}
		done(ctx, gateway.Result{Code: ldap.LDAPResultSuccess})
		return prepared[0].Seq
	}
	waitDelivered := func(seq uint64) *store.Record {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			rec, err := j.Get(seq)
			if err != nil {
				t.Fatal(err)
			}
			if rec.State == store.StateDelivered || rec.State == store.StateDead {
				return rec
			}
			if time.Now().After(deadline) {
				t.Fatalf("record %d still %s (attempts %d, last error %q)", seq, rec.State, rec.Attempts, rec.LastError)
			}
			select {
			case err := <-delivering:
				t.Fatalf("delivery stopped: %v", err)
			case <-time.After(10 * time.Millisecond):
			}
		}
	}

	rec := waitDelivered(relay(replace(alice, "userPassword", "n3w-Passw0rd")))
	if rec.State != store.StateDelivered || !strings.Contains(rec.LastError, "displayName (Axigen nickName)") ||
		!strings.Contains(rec.LastError, "longer than") {
		t.Errorf("the reset's record: %s, last error %q; want delivered, naming displayName and the limit", rec.State, rec.LastError)
	}
	acct, ok := rig.sim.Account(pipeDomain, "alice")
	switch {
	case !ok:
		t.Fatal("Axigen has no account alice")
	case acct.Password != "n3w-Passw0rd":
		t.Errorf("Axigen's alice has not the reset password")
	case acct.Contact["phone"] != "+1 555 0142":
		t.Errorf("Axigen's alice phone %q; the phone written with the long value is deliverable", acct.Contact["phone"])
	case acct.Contact["nickName"] != "Al":
		t.Errorf("Axigen's alice nickName %q; want Axigen's own (Al) kept", acct.Contact["nickName"])
	}
	if !strings.Contains(audit.String(), `"skipped":"not sent: attribute displayName`) {
		t.Errorf("no audit line names the skipped value:\n%s", audit.String())
	}
	if strings.Contains(audit.String(), "n3w-Passw0rd") || strings.Contains(rec.LastError, strings.Repeat("x", 20)) {
		t.Error("the audit log holds the password, or the record holds the skipped value")
	}

	rec = waitDelivered(relay(replace(alice, "mobile", "+1 555 0143")))
	if acct, _ := rig.sim.Account(pipeDomain, "alice"); rec.State != store.StateDelivered || acct.Contact["mobilePhone"] != "+1 555 0143" {
		t.Errorf("the next change: record %s (%q), Axigen's mobile %q", rec.State, rec.LastError, acct.Contact["mobilePhone"])
	}
}
