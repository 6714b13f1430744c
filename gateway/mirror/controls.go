package mirror

import (
	"fmt"
	"slices"
	"strings"

	"github.com/go-ldap/ldap/v3"

	"github.com/ldapgate/ldapgate/gateway"
	"github.com/ldapgate/ldapgate/internal/ldapwire"
)

// The request controls of writes, and what the write path does with each
// (docs/architecture.md, "Controls on writes"). A control can change who
// makes a write, whether it is made at all or when, or what it may
// change; a write to an account or group carrying one the gateway does not
// handle is refused, never relayed unjudged or unmirrored. Writes to
// other entries are relayed with their controls as sent.

// controlTreatment is what the write path does with one control on a
// write to an account or group.
type controlTreatment int

const (
	// ctlRelay: the control changes nothing the gateway judges or
	// mirrors; the write is judged and mirrored as usual.
	ctlRelay controlTreatment = iota
	// ctlProxy: proxied authorization: the policy judges the authorized
	// identity (identify), and only a critical control is accepted, so
	// that a directory that ignores it cannot apply the write as the
	// bound identity the gateway did not judge.
	ctlProxy
	// ctlNoMirror: the directory does not apply the write (no-op): judged
	// as usual, relayed with no journal record; only a critical control is
	// accepted, so that a directory that ignores it cannot apply the write
	// unmirrored.
	ctlNoMirror
	// ctlRefuse: refused on writes to accounts and groups.
	ctlRefuse
)

// Control OIDs the table names.
const (
	oidProxyAuthzV1    = "2.16.840.1.113730.3.4.12"
	oidProxyAuthzV2    = "2.16.840.1.113730.3.4.18"
	oidTxnSpec         = "1.3.6.1.1.21.2"
	oidNoOp            = "1.3.6.1.4.1.4203.1.10.2"
	oidRelax           = "1.3.6.1.4.1.4203.666.5.12"
	oidPermissiveModif = "1.2.840.113556.1.4.1413"
	oidManageDsaIT     = "2.16.840.1.113730.3.4.2"
	oidTreeDelete      = "1.2.840.113556.1.4.805"
)

// knownControl is one row of the table.
type knownControl struct {
	name  string
	treat controlTreatment
	why   string // for a refusal: the diagnostic's reason
}

// writeControls is the one table of request controls the write path knows.
// A control not in it is relayed when not critical (the directory may
// ignore it, RFC 4511 4.1.11, and so does the gateway), refused when
// critical.
var writeControls = map[string]knownControl{
	oidProxyAuthzV2: {name: "proxied authorization v2 (RFC 4370)", treat: ctlProxy},
	oidProxyAuthzV1: {name: "proxied authorization v1", treat: ctlRefuse,
		why: "its identity form is obsolete; use proxied authorization v2 (2.16.840.1.113730.3.4.18), marked critical"},
	oidTxnSpec: {name: "LDAP transaction (RFC 5805)", treat: ctlRefuse,
		why: "the gateway mirrors a write when the directory applies it, and a transaction applies it only at its end"},
	oidNoOp: {name: "no-op", treat: ctlNoMirror},
	oidRelax: {name: "relax rules", treat: ctlRefuse,
		why: "it lets a write change what the gateway relies on (object classes, operational attributes such as the entry's key)"},
	oidPermissiveModif: {name: "permissive modify", treat: ctlRelay},
	oidManageDsaIT:     {name: "manageDsaIT", treat: ctlRelay},
	oidTreeDelete: {name: "tree delete", treat: ctlRefuse,
		why: "it deletes entries the gateway sees no write for"},
	"1.3.6.1.1.12":           {name: "assertion (RFC 4528)", treat: ctlRelay},
	"1.3.6.1.1.13.1":         {name: "pre-read (RFC 4527)", treat: ctlRelay},
	"1.3.6.1.1.13.2":         {name: "post-read (RFC 4527)", treat: ctlRelay},
	"1.2.840.113556.1.4.529": {name: "extended DN (AD)", treat: ctlRelay},
	"1.2.840.113556.1.4.801": {name: "security descriptor flags (AD)", treat: ctlRelay},
}

// checkControls refuses a write to an account or group that carries a
// control the table refuses, or an unknown critical one; it reports
// whether the directory will leave the entry unchanged (no-op).
func checkControls(ctls []gateway.Control) (noOp bool, answer *gateway.Result) {
	for _, c := range ctls {
		k, known := writeControls[c.OID]
		switch {
		case !known && c.Critical:
			return false, &gateway.Result{Code: ldap.LDAPResultUnavailableCriticalExtension, Diagnostic: fmt.Sprintf(
				"ldapgate: the critical control %s is not one the gateway can judge on a write to an account or group, so the write is not made", c.OID)}
		case !known:
			continue
		case k.treat == ctlRefuse:
			return false, &gateway.Result{Code: ldap.LDAPResultUnwillingToPerform, Diagnostic: fmt.Sprintf(
				"ldapgate: the %s control (%s) is refused on writes to accounts and groups: %s", k.name, c.OID, k.why)}
		case k.treat == ctlNoMirror && !c.Critical:
			// A directory without the control ignores it and applies the
			// write, which the gateway would then not mirror.
			return false, &gateway.Result{Code: ldap.LDAPResultUnwillingToPerform, Diagnostic: fmt.Sprintf(
				"ldapgate: the %s control (%s) must be critical on a write to an account or group: a directory that does not support it would make the change, unmirrored", k.name, c.OID)}
		case k.treat == ctlNoMirror:
			noOp = true
		}
	}
	return noOp, nil
}

// proxiedIdentity returns the identity a proxied authorization control
// asks the directory to apply the write as ("dn:..." made a DN, "" for
// the anonymous identity), found reports whether there is such a control,
// and answer refuses a control the gateway cannot honour faithfully.
func proxiedIdentity(ctls []gateway.Control) (authz string, found bool, answer *gateway.Result) {
	refuse := func(why string) (string, bool, *gateway.Result) {
		return "", true, &gateway.Result{Code: ldap.LDAPResultUnwillingToPerform,
			Diagnostic: "ldapgate: proxied authorization on a write: " + why}
	}
	for _, c := range ctls {
		if c.OID != oidProxyAuthzV2 {
			continue
		}
		if found {
			return refuse("more than one proxied authorization control")
		}
		found = true
		if !c.Critical {
			// A directory that does not honour it would apply the write as
			// the bound identity, which the gateway would not have judged.
			return refuse("the control must be critical (RFC 4370)")
		}
		id := string(c.Value)
		// Some clients wrap the authzId in an OCTET STRING.
		if tag, content, rest, err := ldapwire.Next(c.Value); err == nil && tag == 0x04 && len(rest) == 0 &&
			(strings.HasPrefix(string(content), "dn:") || strings.HasPrefix(string(content), "u:") || len(content) == 0) {
			id = string(content)
		}
		switch {
		case id == "":
			authz = ""
		case len(id) >= 3 && strings.EqualFold(id[:3], "dn:"):
			authz = id[3:]
		default:
			return refuse("only a dn: authorization identity is judged (a u: identity maps to an entry only the directory knows)")
		}
	}
	return authz, found, nil
}

// transactionWrite refuses a write inside an LDAP transaction (RFC 5805)
// that names an entry in, at or above the account and group bases, whatever
// the entry is. The gateway judges each write against the directory as it
// is when the write arrives, and a transaction applies its writes only at
// its end, together: writes that each look harmless when queued become an
// account or a change no one judged once applied (an entry added below an
// empty unit outside the bases, then the unit moved into them; two units
// of the base swapped, then a write to the DN that names an account only
// after the swap). Writes to accounts and groups refuse the control anyway
// (checkControls); writes wholly outside the bases keep it, since what they
// change is no account's or group's.
func (m *Mirror) transactionWrite(w *write) *gateway.Result {
	if !slices.ContainsFunc(w.req.Controls, func(c gateway.Control) bool { return c.OID == oidTxnSpec }) {
		return nil
	}
	mp := m.mapping()
	bases := append(mp.AccountBases(), mp.GroupBases()...)
	for _, dn := range []string{w.target, w.newDN} {
		if dn == "" {
			continue
		}
		touches := mp.UnderAccountBase(dn) || mp.UnderGroupBase(dn) ||
			slices.ContainsFunc(bases, func(b string) bool { return mp.EqualDN(dn, b) || mp.UnderDN(dn, b) })
		if touches {
			return &gateway.Result{Code: ldap.LDAPResultUnwillingToPerform, Diagnostic: fmt.Sprintf(
				"ldapgate: the %s control (%s) is refused on writes in, at or above the account and group bases (%s): "+
					"the gateway judges each write against the directory as it is when the write arrives, and a transaction applies its writes only at its end",
				writeControls[oidTxnSpec].name, oidTxnSpec, quoteDN(dn))}
		}
	}
	return nil
}
