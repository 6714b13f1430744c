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
	"github.com/ldapgate/ldapgate/internal/testenv/slapd"
	"github.com/ldapgate/ldapgate/schema"
	"github.com/ldapgate/ldapgate/store"
)

const (
	memContacts = "ou=contacts," + pipeSuffix
	memExt      = "uid=ext," + memContacts  // outside the bases, member of partners
	memLone     = "uid=lone," + memContacts // outside the bases, in no group
	memPartners = "cn=partners,ou=groups," + pipeSuffix
)

// memberLDIF: ext and lone, contacts with a mail outside the bases; ext is
// a member of partners (with alice), and listed by a uniqueMember of
// upartners too.
var memberLDIF = []string{
	"dn: " + memContacts + "\nobjectClass: organizationalUnit\nou: contacts\n",
	"dn: " + memExt + "\nobjectClass: inetOrgPerson\nuid: ext\ncn: Ext\nsn: Person\nmail: ext@example.com\n",
	"dn: " + memLone + "\nobjectClass: inetOrgPerson\nuid: lone\ncn: Lone\nsn: Person\nmail: lone@example.com\n",
	"dn: " + memPartners + "\nobjectClass: groupOfNames\ncn: partners\nmember: " + pipeUser("alice") + "\nmember: " + memExt + "\n",
	"dn: cn=upartners,ou=groups," + pipeSuffix + "\nobjectClass: groupOfUniqueNames\ncn: upartners\nuniqueMember: " + memExt + "\n",
}

// A write to an entry outside the bases that may change what a group lists
// for it journals a record of each group listing it, before the relay,
// settled on the directory's answer; other writes outside the bases
// journal nothing.
func TestInterceptMemberOutsideTheBases(t *testing.T) {
	rig := newPipelineRigWith(t, slapd.Options{LDIF: memberLDIF})
	const aborted = store.State("")
	del := &gateway.WriteRequest{Op: gateway.OpDelete, DN: memExt}
	rename := &gateway.WriteRequest{Op: gateway.OpModifyDN, DN: memExt, NewRDN: "uid=ext2", DeleteOldRDN: true}
	noOp := replace(memExt, "mail", "ext.new@example.com")
	noOp.Controls = []gateway.Control{{OID: oidNoOp, Critical: true}}
	tests := []struct {
		name   string
		bound  string
		req    *gateway.WriteRequest
		groups bool // records of partners and upartners are prepared
		answer gateway.Result
		state  store.State
	}{
		{name: "mail changed, the directory applies it: committed", bound: pipeAdminDN,
			req: replace(memExt, "MAIL", "ext.new@example.com"), groups: true,
			answer: gateway.Result{Code: ldap.LDAPResultSuccess}, state: store.StateCommitted},
		{name: "mail changed, the directory refuses it: aborted", bound: pipeAdminDN,
			req: replace(memExt, "mail", "ext.new@example.com"), groups: true,
			answer: gateway.Result{Code: ldap.LDAPResultInsufficientAccessRights}, state: aborted},
		{name: "mail changed, the directory never answers: resolved (committed)", bound: pipeAdminDN,
			req: replace(memExt, "mail", "ext.new@example.com"), groups: true,
			answer: gateway.Result{Code: ldap.LDAPResultUnavailable, Unanswered: true}, state: store.StateCommitted},
		{name: "deleted: committed", bound: pipeAdminDN, req: del, groups: true,
			answer: gateway.Result{Code: ldap.LDAPResultSuccess}, state: store.StateCommitted},
		{name: "renamed: committed", bound: pipeAdminDN, req: rename, groups: true,
			answer: gateway.Result{Code: ldap.LDAPResultSuccess}, state: store.StateCommitted},
		{name: "by a user: the directory judges, its refusal aborts", bound: pipeUser("bob"),
			req: replace(memExt, "mail", "ext.new@example.com"), groups: true,
			answer: gateway.Result{Code: ldap.LDAPResultInsufficientAccessRights}, state: aborted},
		{name: "another attribute: no record", bound: pipeAdminDN,
			req: replace(memExt, "description", "x")},
		{name: "mail of an entry in no group: no record", bound: pipeAdminDN,
			req: replace(memLone, "mail", "lone.new@example.com")},
		{name: "a no-op: no record", bound: pipeAdminDN, req: noOp},
		{name: "mail changed by Axigen's connector: committed (Axigen has no object to correct it)", bound: pipeAxigenDN,
			req: replace(memExt, "mail", "ext.new@example.com"), groups: true,
			answer: gateway.Result{Code: ldap.LDAPResultSuccess}, state: store.StateCommitted},
		{name: "deleted by Axigen's connector: no record", bound: pipeAxigenDN, req: del},
		{name: "renamed by Axigen's connector: no record", bound: pipeAxigenDN, req: rename},
		{name: "another attribute by Axigen's connector: no record", bound: pipeAxigenDN,
			req: replace(memExt, "description", "x")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, j, audit := rig.mirror(t)
			ctx := context.Background()
			done, answer := intercept(ctx, m, tt.bound, tt.req)
			wantAnswer(t, answer, 0, "")
			prepared, err := j.Prepared()
			if err != nil {
				t.Fatal(err)
			}
			if !tt.groups {
				if len(prepared) != 0 {
					t.Fatalf("prepared %+v, want no record", prepared[0])
				}
				if done != nil {
					done(ctx, gateway.Result{Code: ldap.LDAPResultSuccess})
				}
				m.Close()
				assertNoRecordEver(t, j)
				return
			}
			if len(prepared) != 2 || done == nil {
				t.Fatalf("%d records prepared, Completion %v; want 2 and a Completion", len(prepared), done != nil)
			}
			names := map[string]bool{}
			for _, rec := range prepared {
				names[rec.Name] = true
				if rec.Kind != store.KindGroup || rec.Op != store.OpModify || rec.EntryKey == "" ||
					!schema.EqualDN(rec.Actor, tt.bound) || rec.ClientAddr != "192.0.2.1:4711" || len(rec.Changes) != 0 ||
					!strings.Contains(rec.Note, "ext") {
					t.Errorf("prepared %+v; want a group modify record of the writer with the group's key", rec)
				}
				if rec.Name == "partners" && !schema.EqualDN(rec.DN, memPartners) {
					t.Errorf("partners' record is of %s", rec.DN)
				}
			}
			if !names["partners"] || !names["upartners"] {
				t.Fatalf("records of %v, want partners and upartners", names)
			}
			done(ctx, tt.answer)
			m.Close() // the commits and aborts are in the journal
			for _, rec := range prepared {
				got, err := j.Get(rec.Seq)
				switch {
				case tt.state == aborted && !errors.Is(err, store.ErrNotFound):
					t.Fatalf("record %d: %+v, %v; want it aborted", rec.Seq, got, err)
				case tt.state != aborted && (err != nil || got.State != tt.state):
					t.Fatalf("record %d: %+v, %v; want %s", rec.Seq, got, err, tt.state)
				}
			}
			if !strings.Contains(audit.String(), "member's groups journaled") {
				t.Errorf("no audit line for the groups journaled: %s", audit)
			}
		})
	}
}

// A record of a member's group left prepared (the gateway stopped before
// the directory answered) is committed at the next start: delivering the
// group as it is is right whether or not the write happened.
func TestMemberGroupRecordRecovered(t *testing.T) {
	rig := newPipelineRigWith(t, slapd.Options{LDIF: memberLDIF})
	m, j, _ := rig.mirror(t)
	ctx := context.Background()
	if _, answer := intercept(ctx, m, pipeAdminDN, replace(memExt, "mail", "ext.new@example.com")); answer != nil {
		t.Fatalf("Intercept answered %+v", answer)
	}
	prepared, err := j.Prepared()
	if err != nil || len(prepared) != 2 {
		t.Fatalf("prepared %d, %v; want 2", len(prepared), err)
	}
	if err := m.Recover(ctx); err != nil {
		t.Fatal(err)
	}
	for _, rec := range prepared {
		if got, err := j.Get(rec.Seq); err != nil || got.State != store.StateCommitted {
			t.Fatalf("record %d after recovery: %+v, %v; want committed", rec.Seq, got, err)
		}
	}
}

// The whole path: ext's mail changed, then ext deleted, through Intercept
// and the directory; each time Axigen's partners follows.
func TestMemberOutsideTheBasesDelivered(t *testing.T) {
	rig := newPipelineRigWith(t, slapd.Options{LDIF: memberLDIF})
	m, j, _ := rig.mirror(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	delivering := make(chan error, 1)
	go func() { delivering <- m.Run(ctx) }()
	conn, err := rig.dir.AdminConn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	step := func(req *gateway.WriteRequest, write func() error, want ...string) {
		t.Helper()
		done, answer := intercept(ctx, m, pipeAdminDN, req)
		if answer != nil || done == nil {
			t.Fatalf("Intercept: %+v, Completion %v", answer, done != nil)
		}
		if err := write(); err != nil {
			t.Fatalf("the directory refuses the write: %v", err)
		}
		done(ctx, gateway.Result{Code: ldap.LDAPResultSuccess})
		deadline := time.Now().Add(10 * time.Second)
		for {
			g, _ := rig.sim.Group(pipeDomain, "partners")
			st, err := j.Stats()
			if err != nil {
				t.Fatal(err)
			}
			if equalFold(g.Members, want) && st.Prepared+st.Committed == 0 {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("Axigen's partners: %v, want %v (journal %+v)", g.Members, want, st)
			}
			select {
			case err := <-delivering:
				t.Fatalf("delivery stopped: %v", err)
			case <-time.After(20 * time.Millisecond):
			}
		}
	}
	step(replace(memExt, "mail", "ext.new@example.com"), func() error {
		mod := ldap.NewModifyRequest(memExt, nil)
		mod.Replace("mail", []string{"ext.new@example.com"})
		return conn.Modify(mod)
	}, "alice@example.com", "ext.new@example.com")
	step(&gateway.WriteRequest{Op: gateway.OpDelete, DN: memExt}, func() error {
		if err := conn.Del(ldap.NewDelRequest(memExt, nil)); err != nil {
			return err
		}
		// The unit tests' slapd has no refint: the test drops ext from
		// the group as the e2e directory's overlay would.
		mod := ldap.NewModifyRequest(memPartners, nil)
		mod.Delete("member", []string{memExt})
		return conn.Modify(mod)
	}, "alice@example.com")
}

func equalFold(got, want []string) bool {
	if len(got) != len(want) {
		return false
	}
	seen := map[string]int{}
	for _, g := range got {
		seen[strings.ToLower(g)]++
	}
	for _, w := range want {
		if seen[strings.ToLower(w)] == 0 {
			return false
		}
		seen[strings.ToLower(w)]--
	}
	return true
}

// An entry listed by more groups than one write journals: its mail change
// is refused, and nothing is journaled.
func TestMemberOfTooManyGroupsRefused(t *testing.T) {
	ldif := append([]string(nil), memberLDIF...)
	for i := range memberGroupsMax + 1 {
		ldif = append(ldif, fmt.Sprintf("dn: cn=g%d,ou=groups,%s\nobjectClass: groupOfNames\ncn: g%d\nmember: %s\n", i, pipeSuffix, i, memLone))
	}
	rig := newPipelineRigWith(t, slapd.Options{LDIF: ldif})
	m, j, _ := rig.mirror(t)
	ctx := context.Background()
	done, answer := intercept(ctx, m, pipeAdminDN, replace(memLone, "mail", "lone.new@example.com"))
	wantAnswer(t, answer, ldap.LDAPResultUnwillingToPerform, "member of 257 groups")
	if done != nil {
		t.Fatal("a refused write has a Completion")
	}
	m.Close()
	assertNoRecordEver(t, j)
}

// The groups of a DN (memberGroups, for a member's write; groupsOf, for an
// account's delivery) include those whose uniqueMember lists it with the
// optional UID (<dn>#'0101'B), which slapd's uniqueMemberMatch does not
// match against the DN alone, however the value spells the DN, and with
// or without an equality index on uniqueMember (slapd answers the
// approximate term from it). DNs that only look alike stay out.
func TestMemberGroupsUniqueMemberWithUID(t *testing.T) {
	const (
		odd   = "cn=Ext\\, Partner+mail=odd@example.com," + memContacts // escaped comma, multi-valued RDN
		child = "uid=x," + memExt
	)
	group := func(cn string, values ...string) string {
		s := "dn: cn=" + cn + ",ou=groups," + pipeSuffix + "\nobjectClass: groupOfUniqueNames\ncn: " + cn + "\n"
		for _, v := range values {
			s += "uniqueMember: " + v + "\n"
		}
		return s
	}
	ldif := append(append([]string(nil), memberLDIF...),
		"dn: "+odd+"\nobjectClass: inetOrgPerson\ncn: Ext, Partner\nsn: Partner\nmail: odd@example.com\n",
		group("uid1", memExt+"#'0101'B"),
		group("uidspelled", "UID = Ext ,  OU=Contacts,DC=Example,dc=COM#'1'B"),
		group("uidtwice", memExt+"#'0'B", memExt+"#'1'B", pipeUser("alice")),
		group("uidandplain", memExt, memExt+"#'0101'B"),
		group("uidodd", "mail=odd@example.com+CN=ext\\2C partner,ou=contacts,"+pipeSuffix+"#'0101'B"),
		group("lookalike", "uid=exte,"+memContacts+"#'0101'B", "uid=ext,ou=contacts2,"+pipeSuffix+"#'0101'B"),
		group("below", child+"#'0101'B"),
	)
	wantExt := []string{"partners", "upartners", "uid1", "uidspelled", "uidtwice", "uidandplain"}
	for _, index := range []string{"", "index uniqueMember eq"} {
		t.Run("config "+fmt.Sprintf("%q", index), func(t *testing.T) {
			rig := newPipelineRigWith(t, slapd.Options{LDIF: ldif, ExtraConfig: index})
			m, _, _ := rig.mirror(t)
			defer m.Close()
			ctx := context.Background()
			names := func(dns []string) []string {
				var out []string
				for _, dn := range dns {
					p, err := ldap.ParseDN(dn)
					if err != nil {
						t.Fatal(err)
					}
					out = append(out, p.RDNs[0].Attributes[0].Value)
				}
				return out
			}
			for _, tt := range []struct {
				dn   string
				want []string
			}{
				{memExt, wantExt},
				{"UID=EXT, ou=contacts, dc=example, dc=com", wantExt},
				{odd, []string{"uidodd"}},
				{"cn=Ext\\2c Partner+mail=odd@example.com," + memContacts, []string{"uidodd"}},
				{child, []string{"below"}},
				{memLone, nil},
			} {
				entries, err := m.memberGroups(ctx, tt.dn)
				if err != nil {
					t.Fatalf("memberGroups(%s): %v", tt.dn, err)
				}
				var got []string
				for _, e := range entries {
					got = append(got, e.DN)
				}
				if !equalFold(names(got), tt.want) {
					t.Errorf("memberGroups(%s) = %v, want %v", tt.dn, names(got), tt.want)
				}
				dns, err := m.groupsOf(ctx, tt.dn)
				if err != nil {
					t.Fatalf("groupsOf(%s): %v", tt.dn, err)
				}
				if !equalFold(names(dns), tt.want) {
					t.Errorf("groupsOf(%s) = %v, want %v", tt.dn, names(dns), tt.want)
				}
			}
		})
	}
}

// A member's write journals its groups' records with the names the groups
// have once a rename of one of them, on its way, is answered: it waits
// for the rename (which goes alone), then searches again. Read before,
// the record of partners would carry the name the rename gives up, and a
// delivery naming the group as of the rename's record (Journal.NameAfter)
// would give it back that name.
func TestMemberGroupRecordsWaitForAGroupRename(t *testing.T) {
	rig := newPipelineRigWith(t, slapd.Options{LDIF: memberLDIF})
	m, j, _ := rig.mirror(t)
	ctx := context.Background()
	conn, err := rig.dir.AdminConn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	renaming, answer := intercept(ctx, m, pipeAdminDN, &gateway.WriteRequest{Op: gateway.OpModifyDN, DN: memPartners, NewRDN: "cn=partners2", DeleteOldRDN: true})
	wantAnswer(t, answer, 0, "")
	type result struct {
		done   gateway.Completion
		answer *gateway.Result
	}
	member := make(chan result, 1)
	go func() {
		done, answer := intercept(ctx, m, pipeAdminDN, replace(memExt, "mail", "ext.new@example.com"))
		member <- result{done, answer}
	}()
	// The member's write waits for the rename (someone waits on the
	// registry), and has journaled nothing yet.
	deadline := time.Now().Add(10 * time.Second)
	for {
		m.onWay.mu.Lock()
		waiting := m.onWay.freed != nil
		m.onWay.mu.Unlock()
		if waiting {
			break
		}
		select {
		case r := <-member:
			t.Fatalf("the member's write went with the rename of its group on its way (answer %+v)", r.answer)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("the member's write neither waits nor goes")
		}
		time.Sleep(time.Millisecond) // polling the registry, not ordering
	}
	if err := conn.ModifyDN(ldap.NewModifyDNRequest(memPartners, "cn=partners2", true, "")); err != nil {
		t.Fatal(err)
	}
	renaming(ctx, gateway.Result{Code: ldap.LDAPResultSuccess})
	var r result
	select {
	case r = <-member:
	case <-time.After(10 * time.Second):
		t.Fatal("the member's write still waits once the rename is answered")
	}
	wantAnswer(t, r.answer, 0, "")
	prepared, err := j.Prepared()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, rec := range prepared {
		if rec.Kind == store.KindGroup && rec.Op == store.OpModify {
			names = append(names, rec.Name)
		}
	}
	slices.Sort(names)
	if !slices.Equal(names, []string{"partners2", "upartners"}) {
		t.Errorf("the member's group records name %v, want [partners2 upartners]", names)
	}
	r.done(ctx, gateway.Result{Code: ldap.LDAPResultSuccess})
	if len(m.onWay.writes) != 0 || len(m.onWay.exclusive) != 0 {
		t.Errorf("every write answered, the registry holds %v, %v", m.onWay.writes, m.onWay.exclusive)
	}
}

// A member's delivery that finds one of its groups with a write on its way
// (a rename the directory made, whose commit has not come yet) does not
// apply the group then — it would be made under its new name before the
// rename's record renames it, and the old one left behind — nor skip it:
// it is tried again once the group's record is settled.
func TestMemberDeliveryWaitsForAGroupWriteOnItsWay(t *testing.T) {
	rig := newPipelineRigWith(t, slapd.Options{LDIF: memberLDIF})
	m, j, _ := rig.mirror(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	delivering := make(chan error, 1)
	go func() { delivering <- m.Run(ctx) }()
	conn, err := rig.dir.AdminConn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	// Axigen has partners, with bob added.
	done, answer := intercept(ctx, m, pipeAdminDN, &gateway.WriteRequest{Op: gateway.OpModify, DN: memPartners,
		Changes: []gateway.Modification{{Op: gateway.ModAdd, Attribute: gateway.Attribute{Type: "member", Values: [][]byte{[]byte(pipeUser("bob"))}}}}})
	wantAnswer(t, answer, 0, "")
	add := ldap.NewModifyRequest(memPartners, nil)
	add.Add("member", []string{pipeUser("bob")})
	if err := conn.Modify(add); err != nil {
		t.Fatal(err)
	}
	done(ctx, gateway.Result{Code: ldap.LDAPResultSuccess})
	waitGroups := func(what string, ok func() bool) {
		t.Helper()
		deadline := time.Now().Add(15 * time.Second)
		for !ok() {
			if time.Now().After(deadline) {
				st, _ := j.Stats()
				t.Fatalf("Axigen's groups: %+v (journal %+v), want %s", rig.sim.Groups(pipeDomain), st, what)
			}
			select {
			case err := <-delivering:
				t.Fatalf("delivery stopped: %v", err)
			case <-time.After(10 * time.Millisecond):
			}
		}
	}
	waitGroups("partners with bob", func() bool {
		g, _ := rig.sim.Group(pipeDomain, "partners")
		return equalFold(g.Members, []string{"alice@example.com", "bob@example.com", "ext@example.com"})
	})
	renaming, answer := intercept(ctx, m, pipeAdminDN, &gateway.WriteRequest{Op: gateway.OpModifyDN, DN: memPartners, NewRDN: "cn=partners2", DeleteOldRDN: true})
	wantAnswer(t, answer, 0, "")
	if err := conn.ModifyDN(ldap.NewModifyDNRequest(memPartners, "cn=partners2", true, "")); err != nil {
		t.Fatal(err)
	}
	// alice's mail changes while the rename is answered by the directory
	// but not settled in the journal yet.
	done, answer = intercept(ctx, m, pipeAdminDN, replace(pipeUser("alice"), "mail", "alice.new@example.com"))
	wantAnswer(t, answer, 0, "")
	mod := ldap.NewModifyRequest(pipeUser("alice"), nil)
	mod.Replace("mail", []string{"alice.new@example.com"})
	if err := conn.Modify(mod); err != nil {
		t.Fatal(err)
	}
	done(ctx, gateway.Result{Code: ldap.LDAPResultSuccess})
	waitRecord := func(what string, ok func(*store.Record) bool) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			recs, err := j.List(store.Filter{})
			if err != nil {
				t.Fatal(err)
			}
			for _, r := range recs {
				if r.Kind == store.KindAccount && ok(r) {
					return
				}
			}
			if time.Now().After(deadline) {
				t.Fatalf("alice's record never %s: %+v", what, recs)
			}
			select {
			case err := <-delivering:
				t.Fatalf("delivery stopped: %v", err)
			case <-time.After(10 * time.Millisecond):
			}
		}
	}
	waitRecord("tried", func(r *store.Record) bool {
		return r.DN == pipeUser("alice") && (r.Attempts > 0 || r.LastError != "")
	})
	for _, r := range mustList(t, j) {
		if r.DN == pipeUser("alice") && r.State != store.StateDelivered && r.Attempts != 0 {
			t.Errorf("alice's record put off with %d attempts counted, want none (%s)", r.Attempts, r.LastError)
		}
	}
	if g, ok := rig.sim.Group(pipeDomain, "partners2"); ok {
		t.Fatalf("Axigen has the group under its new name before the rename's record is settled (beside partners): %+v", g)
	}
	renaming(ctx, gateway.Result{Code: ldap.LDAPResultSuccess})
	waitGroups("partners2 of alice.new, bob and ext, no partners, nothing waiting", func() bool {
		st, err := j.Stats()
		if err != nil {
			t.Fatal(err)
		}
		g, ok := rig.sim.Group(pipeDomain, "partners2")
		_, old := rig.sim.Group(pipeDomain, "partners")
		return ok && !old && equalFold(g.Members, []string{"alice.new@example.com", "bob@example.com", "ext@example.com"}) && st.Prepared+st.Committed == 0
	})
}

func mustList(t *testing.T, j *store.Journal) []*store.Record {
	t.Helper()
	recs, err := j.List(store.Filter{})
	if err != nil {
		t.Fatal(err)
	}
	return recs
}
