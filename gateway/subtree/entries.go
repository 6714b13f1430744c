package subtree

import (
	"encoding/base64"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/go-ldap/ldap/v3"

	"github.com/ldapgate/ldapgate/gateway"
	"github.com/ldapgate/ldapgate/store"
)

// attribute is one attribute of an entry; order is kept as built so
// that ldapsearch prints entries the same way every time.
type attribute struct {
	name   string
	values []string
}

// entry is one entry of the subtree, built on demand from the journal or
// the counters (nothing is cached: every search sees the present state).
type entry struct {
	dn    string
	attrs []attribute
}

func (e *entry) add(name string, values ...string) {
	var kept []string
	for _, v := range values {
		if v != "" {
			kept = append(kept, v)
		}
	}
	if len(kept) > 0 {
		e.attrs = append(e.attrs, attribute{name: name, values: kept})
	}
}

// get returns the values of an attribute (names compare without case).
func (e *entry) get(name string) ([]string, bool) {
	for _, a := range e.attrs {
		if strings.EqualFold(a.name, name) {
			return a.values, true
		}
	}
	return nil, false
}

// Names of the subtree's fixed entries.
const (
	changelogDN = "cn=changelog"
	monitorDN   = "cn=ldapgate,cn=monitor"
)

// generalizedTime renders t as an LDAP GeneralizedTime in UTC.
func generalizedTime(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format("20060102150405Z")
}

func itoa[T ~int | ~int64 | ~uint64](n T) string { return strconv.FormatInt(int64(n), 10) }

// changelogRoot is cn=changelog with the range of change numbers it holds.
func changelogRoot(first, last uint64) *entry {
	e := &entry{dn: changelogDN}
	e.add("objectClass", "top", "extensibleObject")
	e.add("cn", "changelog")
	if last > 0 {
		e.add("firstChangeNumber", itoa(first))
		e.add("lastChangeNumber", itoa(last))
	}
	return e
}

// changeDN is the DN of a journal record's changelog entry.
func changeDN(seq uint64) string { return "changeNumber=" + itoa(seq) + "," + changelogDN }

// changeType names a record's operation the way draft-good-ldap-changelog does.
func changeType(op store.Op) string {
	switch op {
	case store.OpAdd:
		return "add"
	case store.OpDelete:
		return "delete"
	case store.OpRename:
		return "modrdn"
	default: // modify, password
		return "modify"
	}
}

// passwordAttributes are the attributes whose values never appear in the
// changelog, whatever the journal holds (it should hold none).
var passwordAttributes = map[string]bool{
	"userpassword": true, "unicodepwd": true, "clearpassword": true,
	"sambantpassword": true, "sambalmpassword": true, "authpassword": true,
}

const passwordPlaceholder = "(password)"

// changesLDIF renders a record's changes as the LDIF text of the draft's
// "changes" attribute: attribute lines for an add, modify blocks otherwise.
// Password values are shown as a placeholder, never as themselves.
func changesLDIF(r *store.Record) string {
	var b strings.Builder
	value := func(attr, v string) {
		if passwordAttributes[strings.ToLower(attr)] {
			v = passwordPlaceholder
		}
		b.WriteString(attr)
		if needsBase64(v) {
			b.WriteString(":: ")
			b.WriteString(base64String(v))
		} else {
			b.WriteString(": ")
			b.WriteString(v)
		}
		b.WriteByte('\n')
	}
	switch r.Op {
	case store.OpAdd:
		for _, c := range r.Changes {
			for _, v := range c.Values {
				value(c.Attr, v)
			}
			if len(c.Values) == 0 && passwordAttributes[strings.ToLower(c.Attr)] {
				value(c.Attr, passwordPlaceholder)
			}
		}
	case store.OpPassword:
		b.WriteString("replace: userPassword\n")
		value("userPassword", passwordPlaceholder)
		b.WriteString("-\n")
	case store.OpModify:
		for _, c := range r.Changes {
			b.WriteString(c.Op)
			b.WriteString(": ")
			b.WriteString(c.Attr)
			b.WriteByte('\n')
			for _, v := range c.Values {
				value(c.Attr, v)
			}
			if len(c.Values) == 0 && c.Op != "delete" && passwordAttributes[strings.ToLower(c.Attr)] {
				value(c.Attr, passwordPlaceholder)
			}
			b.WriteString("-\n")
		}
	}
	return b.String()
}

// changeEntry is a journal record as a changelog entry.
func changeEntry(r *store.Record) *entry {
	e := &entry{dn: changeDN(r.Seq)}
	e.add("objectClass", "top", "changeLogEntry", "extensibleObject")
	e.add("changeNumber", itoa(r.Seq))
	e.add("targetDN", r.DN)
	e.add("changeType", changeType(r.Op))
	e.add("changeTime", generalizedTime(r.Time))
	e.add("changes", changesLDIF(r))
	if r.Op == store.OpRename {
		if newDN, err := ldap.ParseDN(r.NewDN); err == nil && len(newDN.RDNs) > 0 {
			e.add("newRDN", (&ldap.DN{RDNs: newDN.RDNs[:1]}).String())
			newParent := &ldap.DN{RDNs: newDN.RDNs[1:]}
			if oldDN, err := ldap.ParseDN(r.DN); err != nil || !(&ldap.DN{RDNs: oldDN.RDNs[min(1, len(oldDN.RDNs)):]}).EqualFold(newParent) {
				e.add("newSuperior", newParent.String())
			}
		}
		e.add("newDN", r.NewDN)
	}
	e.add("entryKind", string(r.Kind))
	e.add("entryKey", r.EntryKey)
	e.add("actor", r.Actor)
	e.add("clientAddress", r.ClientAddr)
	e.add("deliveryState", string(r.State))
	e.add("deliveryAttempts", itoa(r.Attempts))
	e.add("lastError", r.LastError)
	e.add("nextAttempt", generalizedTime(r.NextAttempt))
	e.add("deliveredAt", generalizedTime(r.DeliveredAt))
	e.add("secretState", string(r.SecretState))
	e.add("note", r.Note)
	return e
}

// monitorEntries are cn=monitor and its children, from the gateway's
// counters and the journal's statistics.
func monitorEntries(gs gateway.Stats, health []gateway.UpstreamHealth, js store.Stats, jsErr error) []*entry {
	root := &entry{dn: monitorDN}
	root.add("objectClass", "top", "extensibleObject")
	root.add("cn", "monitor")
	root.add("description", "ldapgate: connections, operations, upstream health and delivery backlog")

	conns := &entry{dn: "cn=connections," + monitorDN}
	conns.add("objectClass", "top", "extensibleObject")
	conns.add("cn", "connections")
	conns.add("currentConnections", itoa(gs.Connections))
	conns.add("totalConnections", itoa(gs.Accepted))
	conns.add("rejectedConnections", itoa(gs.Rejected))

	ops := &entry{dn: "cn=operations," + monitorDN}
	ops.add("objectClass", "top", "extensibleObject")
	ops.add("cn", "operations")
	ops.add("requests", itoa(gs.Requests))

	up := &entry{dn: "cn=upstream," + monitorDN}
	up.add("objectClass", "top", "extensibleObject")
	up.add("cn", "upstream")
	up.add("upstreamConnections", itoa(gs.UpstreamConns))
	up.add("spareConnections", itoa(gs.SpareConns))
	up.add("upstreamFailures", itoa(gs.UpstreamFailures))
	var ups []*entry
	healthy := 0
	for i, h := range health {
		u := &entry{dn: fmt.Sprintf("cn=upstream%d,cn=upstream,%s", i+1, monitorDN)}
		u.add("objectClass", "top", "extensibleObject")
		u.add("cn", fmt.Sprintf("upstream%d", i+1))
		u.add("upstreamURL", h.URL)
		status := "down"
		if h.Up {
			status = "up"
			healthy++
		}
		u.add("status", status)
		u.add("since", generalizedTime(h.Since))
		u.add("lastError", h.LastError)
		ups = append(ups, u)
	}
	if len(health) > 0 {
		up.add("upstreamsUp", itoa(healthy))
		up.add("upstreamsDown", itoa(len(health)-healthy))
	}

	jn := &entry{dn: "cn=journal," + monitorDN}
	jn.add("objectClass", "top", "extensibleObject")
	jn.add("cn", "journal")
	if jsErr != nil {
		jn.add("lastError", fmt.Sprintf("journal statistics unavailable: %v", jsErr))
	} else {
		jn.add("backlog", itoa(js.Backlog))
		jn.add("prepared", itoa(js.Prepared))
		jn.add("committed", itoa(js.Committed))
		jn.add("delivered", itoa(js.Delivered))
		jn.add("dead", itoa(js.Dead))
		jn.add("inFlight", itoa(js.InFlight))
		jn.add("oldestPendingSeconds", itoa(int64(js.OldestPending/time.Second)))
		if js.OldestPendingSeq > 0 {
			jn.add("oldestPendingChangeNumber", itoa(js.OldestPendingSeq))
		}
		jn.add("lastChangeNumber", itoa(js.LastSeq))
	}
	return append([]*entry{root, conns, ops, up, jn}, ups...)
}

// clusterEntry is cn=cluster below the monitor: the node's state as its
// source describes it, attributes in name order.
func clusterEntry(attrs map[string][]string) *entry {
	e := &entry{dn: "cn=cluster," + monitorDN}
	e.add("objectClass", "top", "extensibleObject")
	e.add("cn", "cluster")
	names := make([]string, 0, len(attrs))
	for name := range attrs {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		e.add(name, attrs[name]...)
	}
	return e
}

// needsBase64 reports whether an LDIF value must be base64-encoded
// (RFC 2849 SAFE-STRING): a leading space, colon or '<', a trailing
// space, or any byte outside printable ASCII.
func needsBase64(v string) bool {
	if v == "" {
		return false
	}
	if v[0] == ' ' || v[0] == ':' || v[0] == '<' || v[len(v)-1] == ' ' {
		return true
	}
	for i := 0; i < len(v); i++ {
		if v[i] < 0x20 || v[i] > 0x7e {
			return true
		}
	}
	return false
}

func base64String(v string) string { return base64.StdEncoding.EncodeToString([]byte(v)) }
