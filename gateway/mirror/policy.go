package mirror

import (
	"github.com/ldapgate/ldapgate/gateway"
	"github.com/ldapgate/ldapgate/schema"
)

// decision is the policy's verdict on one write.
type decision struct {
	// refuse names the rule that refuses the change; empty allows it.
	refuse string
	// mirror says whether the change concerns Axigen at all.
	mirror bool
}

// Rule names, as the diagnostics quote them (docs/architecture.md's policy table).
const (
	ruleCreateAccount  = "create account: admin only"
	ruleDeleteAccount  = "delete account: admin only"
	ruleRenameAccount  = "rename account: admin only"
	ruleAccountAddress = "account mail address (login and group membership): admin only"
	rulePassword       = "password: admin or the account's owner"
	ruleContact        = "contact info: admin or the account's owner"
	ruleDisable        = "account enable/disable: admin only"
	ruleCreateGroup    = "create group: admin only"
	ruleDeleteGroup    = "delete group: admin only"
	ruleRenameGroup    = "rename group: admin only"
	ruleMembership     = "group membership: admin only"
	ruleConnector      = "Axigen's connector: contact info and password of existing accounts only"
)

// judge applies the default policy of docs/architecture.md (the decide
// step's table). admin and owner describe the session: an admin may do
// everything; the owner (bound as the entry itself) may change its password
// and contact info.
func (m *Mirror) judge(kind schema.Kind, req *gateway.WriteRequest, admin, owner bool) decision {
	allow := func(rule string, who bool) decision {
		if who {
			return decision{mirror: true}
		}
		return decision{refuse: rule}
	}
	account := kind == schema.KindAccount
	pick := func(a, g string) string {
		if account {
			return a
		}
		return g
	}
	switch req.Op {
	case gateway.OpAdd:
		return allow(pick(ruleCreateAccount, ruleCreateGroup), admin)
	case gateway.OpDelete:
		return allow(pick(ruleDeleteAccount, ruleDeleteGroup), admin)
	case gateway.OpModifyDN:
		return allow(pick(ruleRenameAccount, ruleRenameGroup), admin)
	case gateway.OpPasswordModify:
		if !account {
			return decision{} // a group has no Axigen password
		}
		return allow(rulePassword, admin || owner)
	}
	// Modify: every attribute it touches must be allowed; it is mirrored if
	// any of them is one Axigen knows.
	d := decision{}
	mp := m.mapping()
	mailAttr := mp.MemberMailAttribute()
	isMail := func(attr string) bool { return account && mailAttr != "" && mp.SameAttribute(attr, mailAttr) }
	for _, c := range req.Changes {
		rule, who := "", false
		switch mp.AttrClass(c.Type, kind) {
		case schema.AttrName:
			rule, who = pick(ruleRenameAccount, ruleRenameGroup), admin
		case schema.AttrPassword:
			rule, who = rulePassword, admin || owner
		case schema.AttrContact:
			rule, who = ruleContact, admin || owner
			// The mail address is how Axigen logs the user in and how groups
			// list members: changing it is the admin's, not the owner's.
			if isMail(c.Type) {
				rule, who = ruleAccountAddress, admin
			}
		case schema.AttrDisabled:
			rule, who = ruleDisable, admin
		case schema.AttrMembership:
			rule, who = ruleMembership, admin
		default:
			if isMail(c.Type) {
				rule, who = ruleAccountAddress, admin
			} else {
				continue // the directory's own ACLs decide; Axigen does not care
			}
		}
		if !who {
			return decision{refuse: rule}
		}
		d.mirror = true
	}
	return d
}

// judgeConnector is the policy for Axigen's own connector (--axigen-bind-dn):
// it may write what Axigen's "Axigen to LDAP" synchronisation writes, the
// contact info (the mail address excepted) and the password of accounts
// that exist, and nothing else, whatever the directory's ACLs give it.
// Its allowed writes are audited; decide never mirrors them back.
func (m *Mirror) judgeConnector(kind schema.Kind, req *gateway.WriteRequest) decision {
	refuse := decision{refuse: ruleConnector}
	if kind != schema.KindAccount {
		return refuse
	}
	switch req.Op {
	case gateway.OpPasswordModify:
		return decision{mirror: true}
	case gateway.OpModify:
	default:
		return refuse
	}
	mp := m.mapping()
	mailAttr := mp.MemberMailAttribute()
	for _, c := range req.Changes {
		switch mp.AttrClass(c.Type, kind) {
		case schema.AttrPassword:
		case schema.AttrContact:
			if mailAttr != "" && mp.SameAttribute(c.Type, mailAttr) {
				return refuse
			}
		default:
			return refuse
		}
	}
	return decision{mirror: len(req.Changes) > 0}
}
