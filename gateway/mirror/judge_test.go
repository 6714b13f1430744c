package mirror

import (
	"context"
	"strings"
	"testing"

	"github.com/go-ldap/ldap/v3"

	"github.com/ldapgate/ldapgate/gateway"
	"github.com/ldapgate/ldapgate/integration/axigen"
	"github.com/ldapgate/ldapgate/schema"
)

// Issue 16: the write path judges the entry the directory means, whatever
// the spelling, the controls or the identity (Axigen's connector, a
// proxied one); and refuses at the write a value Axigen cannot take.
func TestInterceptJudgesTheEntryTheDirectoryMeans(t *testing.T) {
	rig := newPipelineRig(t)
	alice, bob := pipeUser("alice"), pipeUser("bob")
	withControls := func(req *gateway.WriteRequest, ctls ...gateway.Control) *gateway.WriteRequest {
		req.Controls = ctls
		return req
	}
	proxy := func(id string, critical bool) gateway.Control {
		return gateway.Control{OID: oidProxyAuthzV2, Critical: critical, Value: []byte(id), HasValue: true}
	}
	tests := []struct {
		name   string
		bound  string
		req    *gateway.WriteRequest
		code   int    // the gateway's own answer; 0: relayed
		diag   string // what that answer's diagnostic names
		record bool   // a journal record is prepared
	}{
		{"bob's own mail through an OID type", bob,
			replace("uid=bob,2.5.4.11=people,dc=example,dc=com", "mail", "boss@example.com"), 50, ruleAccountAddress, false},
		{"bob's own mail through organizationalUnitName", bob,
			replace("uid=bob,organizationalUnitName=people,dc=example,dc=com", "mail", "boss@example.com"), 50, ruleAccountAddress, false},
		{"bob's own mail through a quoted value", bob,
			replace(`uid=bob,ou="people",dc=example,dc=com`, "mail", "boss@example.com"), 50, ruleAccountAddress, false},
		{"bob's own mail through a trailing NUL (the directory resolves it)", bob,
			replace(`uid=bob,ou=people,dc=example,dc=com\00`, "mail", "boss@example.com"), 50, ruleAccountAddress, false},
		{"bob's own mail through a fullwidth letter (the directory resolves it)", bob,
			replace("uid=\uff42ob,ou=people,dc=example,dc=com", "mail", "boss@example.com"), 50, ruleAccountAddress, false},
		{"an own password change by a session whose entry no one can tell", `uid=nobody,ou=people,dc=example,dc=com\00`,
			&gateway.WriteRequest{Op: gateway.OpPasswordModify, NewPassword: []byte("x")}, 53, "bound as", false},
		{"an unsure spelling of no entry", bob,
			replace(`uid=nobody,ou=people,dc=example,dc=com\00`, "mail", "x@example.com"), 32, "no such entry", false},
		{"an admin's write through an OID type is mirrored", pipeAdminDN,
			replace("uid=bob,2.5.4.11=people,0.9.2342.19200300.100.1.25=example,dc=com", "mail", "bob2@example.com"), 0, "", true},
		{"an admin's write through a trailing NUL is mirrored", pipeAdminDN,
			replace(`uid=bob,ou=people,dc=example,dc=com\00`, "telephoneNumber", "1"), 0, "", true},
		{"a bound DN spelled with an OID is the owner", "uid=alice,2.5.4.11=people,dc=example,dc=com",
			replace(alice, "telephoneNumber", "2"), 0, "", true},
		{"an admin adds an account under an OID-spelled parent", pipeAdminDN,
			func() *gateway.WriteRequest {
				r := addAccount("dave")
				r.DN = "uid=dave,2.5.4.11=people,dc=example,dc=com"
				return r
			}(), 0, "", true},
		{"bob moves an outside entry into the accounts through an unsure superior", bob,
			&gateway.WriteRequest{Op: gateway.OpModifyDN, DN: alice, NewRDN: "uid=alice", NewSuperior: `ou=people,dc=example,dc=com\00`},
			50, ruleRenameAccount, false},

		{"an unknown critical control", alice,
			withControls(replace(alice, "telephoneNumber", "3"), gateway.Control{OID: "1.2.3.4", Critical: true}), 12, "1.2.3.4", false},
		{"an unknown non-critical control is relayed", alice,
			withControls(replace(alice, "telephoneNumber", "3"), gateway.Control{OID: "1.2.3.4"}), 0, "", true},
		{"a transaction", pipeAdminDN,
			withControls(replace(alice, "telephoneNumber", "3"), gateway.Control{OID: oidTxnSpec, Critical: true, Value: []byte("x")}), 53, "RFC 5805", false},
		{"relax", pipeAdminDN,
			withControls(replace(alice, "telephoneNumber", "3"), gateway.Control{OID: oidRelax, Critical: true}), 53, "relax", false},
		{"a no-op is judged", bob,
			withControls(replace(alice, "telephoneNumber", "3"), gateway.Control{OID: oidNoOp, Critical: true}), 50, ruleContact, false},
		{"an allowed no-op is not mirrored", alice,
			withControls(replace(alice, "telephoneNumber", "3"), gateway.Control{OID: oidNoOp, Critical: true}), 0, "", false},
		{"a no-op not marked critical, which a directory without it ignores", alice,
			withControls(replace(alice, "telephoneNumber", "3"), gateway.Control{OID: oidNoOp}), 53, "must be critical", false},
		{"proxied authorization v2: the authorized identity is judged", pipeAdminDN,
			withControls(replace(alice, "mail", "a@example.com"), proxy("dn:"+bob, true)), 50, "by " + schema.CanonicalDN(bob), false},
		{"proxied authorization v2 as the owner", pipeAdminDN,
			withControls(replace(alice, "telephoneNumber", "4"), proxy("dn:"+alice, true)), 0, "", true},
		{"proxied authorization v2, not critical", bob,
			withControls(replace(alice, "telephoneNumber", "4"), proxy("dn:"+pipeAdminDN, false)), 53, "critical", false},
		{"controls on a write outside the accounts and groups are the directory's", bob,
			withControls(replace("cn=config-like,"+pipeSuffix, "description", "x"), proxy("dn:"+pipeAdminDN, false),
				gateway.Control{OID: "1.2.3.4", Critical: true}, gateway.Control{OID: oidTxnSpec, Critical: true}), 0, "", false},
		{"proxied authorization v2 with a u: identity", bob,
			withControls(replace(alice, "telephoneNumber", "4"), proxy("u:admin", true)), 53, "dn:", false},
		{"proxied authorization v1", pipeAdminDN,
			withControls(replace(alice, "telephoneNumber", "4"), gateway.Control{OID: oidProxyAuthzV1, Critical: true}), 53, "v2", false},

		{"Axigen's connector sets a password: not mirrored back", pipeAxigenDN,
			replace(alice, "userPassword", "from-axigen"), 0, "", false},
		{"Axigen's connector adds an account", pipeAxigenDN, addAccount("dave"), 50, ruleConnector, false},
		{"Axigen's connector deletes an account", pipeAxigenDN,
			&gateway.WriteRequest{Op: gateway.OpDelete, DN: alice}, 50, ruleConnector, false},
		{"Axigen's connector changes a group", pipeAxigenDN,
			replace("cn=staff,ou=groups,dc=example,dc=com", "member", alice), 50, ruleConnector, false},
		{"Axigen's connector spelled otherwise is judged the same", "cn=AXIGEN,0.9.2342.19200300.100.1.25=example,dc=com",
			replace(alice, "uid", "alice2"), 50, ruleConnector, false},

		{"a displayName longer than Axigen takes", alice,
			replace(alice, "displayName", strings.Repeat("x", schema.MaxShortValue+1)), 19, "limit of 255", false},
		{"a phone with a line break", alice,
			replace(alice, "telephoneNumber", "1\n2"), 19, "line break", false},
		{"a password longer than Axigen takes", alice,
			replace(alice, "userPassword", strings.Repeat("p", schema.MaxPassword+1)), 19, "limit of 256", false},
		{"a hashed password is not Axigen's to refuse", alice,
			replace(alice, "userPassword", "{SSHA}"+strings.Repeat("p", 400)), 0, "", true},
		{"an account name with a blank", pipeAdminDN,
			replace(alice, "uid", "al ice"), 19, "name", false},
		{"a rename to a name with a blank", pipeAdminDN,
			&gateway.WriteRequest{Op: gateway.OpModifyDN, DN: alice, NewRDN: "uid=al ice", DeleteOldRDN: true}, 19, "not allowed in a name", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, j, _ := rig.mirror(t)
			ctx := context.Background()
			done, answer := intercept(ctx, m, tt.bound, tt.req)
			wantAnswer(t, answer, tt.code, tt.diag)
			prepared, err := j.Prepared()
			if err != nil {
				t.Fatal(err)
			}
			if (len(prepared) == 1) != tt.record || len(prepared) > 1 {
				t.Fatalf("%d records prepared, want a record: %v", len(prepared), tt.record)
			}
			if tt.record {
				if _, err := schema.ExactDN(prepared[0].DN); err != nil || prepared[0].DN != schema.CanonicalDN(prepared[0].DN) {
					t.Errorf("the record's DN %q is not a canonical identity (%v)", prepared[0].DN, err)
				}
			}
			if done != nil {
				done(ctx, gateway.Result{Code: ldap.LDAPResultUnwillingToPerform})
			}
		})
	}
}

// The values decide lets through are ones the Axigen client sends: one
// definition (schema.ValidateValue) is at least as strict as the client's.
func FuzzValueRulesAtLeastAsStrictAsTheClient(f *testing.F) {
	for _, s := range []string{"John", "a b", "\x00", "a\tb", strings.Repeat("x", 9000), "\xff", "x\u2028", "é"} {
		f.Add(uint8(0), s)
		f.Add(uint8(1), s)
		f.Add(uint8(5), s)
	}
	fields := append([]string{schema.FieldName, schema.FieldGroupName, schema.FieldPassword, schema.FieldMember}, schema.ContactFields...)
	f.Fuzz(func(t *testing.T, which uint8, v string) {
		field := fields[int(which)%len(fields)]
		if schema.ValidateValue(field, v) != nil {
			return
		}
		if err := axigen.CheckValue(field, v); err != nil {
			t.Fatalf("schema takes %s %q, the client refuses it: %v", field, v, err)
		}
		if (field == schema.FieldName || field == schema.FieldGroupName || field == schema.FieldMember) && strings.ContainsAny(v, " \t") {
			t.Fatalf("schema takes the name %q with a blank", v)
		}
	})
}
