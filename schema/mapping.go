package schema

import (
	"cmp"
	"errors"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/go-ldap/ldap/v3"
)

// Kind is what an entry is to ldapgate.
type Kind int

const (
	KindNone    Kind = iota // neither: relayed, never mirrored
	KindAccount             // mirrored as an Axigen account
	KindGroup               // mirrored as an Axigen group
)

func (k Kind) String() string {
	switch k {
	case KindAccount:
		return "account"
	case KindGroup:
		return "group"
	}
	return "none"
}

// AttrClass is what an attribute of an account or group means to policy.
type AttrClass int

const (
	AttrOther      AttrClass = iota // not mirrored; the directory's ACLs decide
	AttrName                        // the account or group name: admin only
	AttrPassword                    // admin or owner
	AttrContact                     // one of the contact-info fields: admin or owner
	AttrMembership                  // group members: admin only
	AttrDisabled                    // the disabled flag: mirrored, not a contact field
)

func (c AttrClass) String() string {
	return [...]string{"other", "name", "password", "contact", "membership", "disabled"}[c]
}

// Mapping is a validated Config, ready to classify entries and turn them
// into Axigen's desired state. It is immutable and safe for concurrent use.
type Mapping struct {
	cfg          Config
	aliases      aliases
	accountBases []dnName
	groupBases   []dnName

	accountClasses, accountExclude, groupClasses []string // canonical
	name, groupName, mail, key, disabled         string   // canonical
	members, passwords                           []string // canonical
	contactByAttr                                map[string][]string
	accountAttrs, groupAttrs                     []string // to request when reading

	// canon remembers the canonical names of the attribute descriptions
	// entries use (a few dozen), which every read of an entry to mirror
	// asks for many times over; canonSize bounds it against a directory
	// that sends ever new names.
	canon     sync.Map // description -> canonical name
	canonSize atomic.Int32
	// dns remembers the parses of the DNs asked about lately (dncache.go).
	dns dnCache
}

// maxCanonNames bounds Mapping.canon.
const maxCanonNames = 4096

// NewMapping applies the dialect's defaults to cfg, validates it and
// prepares it for use.
func NewMapping(cfg Config) (*Mapping, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	m := &Mapping{cfg: cfg, aliases: aliasesFor(cfg.Dialect), contactByAttr: map[string][]string{}}
	parse := func(l DNList) []dnName {
		out := make([]dnName, 0, len(l))
		for _, s := range l {
			dn, _ := parseDN(s) // Validate parsed them already
			out = append(out, dn)
		}
		return out
	}
	m.accountBases, m.groupBases = parse(cfg.AccountBase), parse(cfg.GroupBase)
	m.accountClasses = m.canonicalAll(cfg.AccountClasses)
	m.accountExclude = m.canonicalAll(cfg.AccountExcludeClasses)
	m.groupClasses = m.canonicalAll(cfg.GroupClasses)
	m.name = m.canonical(cfg.NameAttribute)
	m.groupName = m.canonical(cfg.GroupNameAttribute)
	m.mail = m.canonical(cfg.MemberMailAttribute)
	m.key = m.canonical(cfg.KeyAttribute)
	if cfg.Disabled.Attribute != "" {
		m.disabled = m.canonical(cfg.Disabled.Attribute)
	}
	m.members = m.canonicalAll(cfg.MemberAttributes)
	m.passwords = m.canonicalAll(cfg.PasswordAttributes)
	for _, field := range ContactFields {
		if attr := cfg.Contact[field]; attr != "" {
			c := m.canonical(attr)
			m.contactByAttr[c] = append(m.contactByAttr[c], field)
		}
	}
	m.accountAttrs, m.groupAttrs = m.accountAttributes(), m.groupAttributes()
	return m, nil
}

func (m *Mapping) canonical(attr string) string {
	if c, ok := m.canon.Load(attr); ok {
		return c.(string)
	}
	c := canonicalName(m.aliases, attr)
	if m.canonSize.Add(1) <= maxCanonNames {
		m.canon.Store(attr, c)
	}
	return c
}

func (m *Mapping) canonicalAll(names []string) []string {
	out := make([]string, len(names))
	for i, n := range names {
		out[i] = m.canonical(n)
	}
	return out
}

// Config returns a copy of the effective configuration, defaults applied.
func (m *Mapping) Config() Config {
	c := m.cfg
	c.AccountBase, c.GroupBase = slices.Clone(c.AccountBase), slices.Clone(c.GroupBase)
	c.AccountClasses, c.AccountExcludeClasses = slices.Clone(c.AccountClasses), slices.Clone(c.AccountExcludeClasses)
	c.GroupClasses, c.MemberAttributes = slices.Clone(c.GroupClasses), slices.Clone(c.MemberAttributes)
	c.PasswordAttributes = slices.Clone(c.PasswordAttributes)
	c.Contact = maps.Clone(c.Contact)
	d := *c.Disabled
	c.Disabled = &d
	return c
}

// AccountBases returns the account bases: Config().AccountBase without
// copying the rest of the configuration (the write path asks per write).
func (m *Mapping) AccountBases() []string { return slices.Clone(m.cfg.AccountBase) }

// GroupBases returns the group bases, as AccountBases.
func (m *Mapping) GroupBases() []string { return slices.Clone(m.cfg.GroupBase) }

// KeyFormat returns how the key attribute's values are rendered (KeyText
// or KeyGUID).
func (m *Mapping) KeyFormat() string { return m.cfg.KeyFormat }

// NameFromAddress reports whether account names come from the mail address.
func (m *Mapping) NameFromAddress() bool { return m.cfg.NameFromAddress }

// Dialect returns the directory dialect.
func (m *Mapping) Dialect() Dialect { return m.cfg.Dialect }

// NameAttribute is the attribute holding the account name.
func (m *Mapping) NameAttribute() string { return m.cfg.NameAttribute }

// GroupNameAttribute is the attribute holding the group name.
func (m *Mapping) GroupNameAttribute() string { return m.cfg.GroupNameAttribute }

// MemberAttributes are the attributes holding group members' DNs.
func (m *Mapping) MemberAttributes() []string { return slices.Clone(m.cfg.MemberAttributes) }

// MemberMailAttribute is read from a member entry to get its address.
// A change to it on an account changes the addresses of its groups.
func (m *Mapping) MemberMailAttribute() string { return m.cfg.MemberMailAttribute }

// PasswordAttributes are the attributes that set a password.
func (m *Mapping) PasswordAttributes() []string { return slices.Clone(m.cfg.PasswordAttributes) }

// KeyAttribute is the stable key attribute (entryUUID, objectGUID).
func (m *Mapping) KeyAttribute() string { return m.cfg.KeyAttribute }

// ContactAttributes maps each mirrored contact field to its attribute.
func (m *Mapping) ContactAttributes() map[string]string {
	out := map[string]string{}
	for f, a := range m.cfg.Contact {
		if a != "" {
			out[f] = a
		}
	}
	return out
}

// ContactFieldsOf returns the contact fields attr feeds (usually one), in
// ContactFields order.
func (m *Mapping) ContactFieldsOf(attr string) []string {
	return slices.Clone(m.contactByAttr[m.canonical(attr)])
}

// AccountAttributes lists the attributes to request when reading an account
// to mirror it. The key is operational in OpenLDAP, so it must be asked for
// by name.
func (m *Mapping) AccountAttributes() []string { return slices.Clone(m.accountAttrs) }

// GroupAttributes lists the attributes to request when reading a group.
func (m *Mapping) GroupAttributes() []string { return slices.Clone(m.groupAttrs) }

func (m *Mapping) accountAttributes() []string {
	attrs := []string{"objectClass", m.cfg.NameAttribute, m.cfg.KeyAttribute}
	for _, f := range ContactFields {
		if a := m.cfg.Contact[f]; a != "" {
			attrs = append(attrs, a)
		}
	}
	attrs = append(attrs, m.cfg.PasswordAttributes...)
	if m.cfg.Disabled.Attribute != "" {
		attrs = append(attrs, m.cfg.Disabled.Attribute)
	}
	return dedupFold(attrs)
}

func (m *Mapping) groupAttributes() []string {
	attrs := []string{"objectClass", m.cfg.GroupNameAttribute, m.cfg.KeyAttribute}
	return dedupFold(append(attrs, m.cfg.MemberAttributes...))
}

func dedupFold(in []string) []string {
	var out []string
	for _, s := range in {
		if !slices.ContainsFunc(out, func(o string) bool { return strings.EqualFold(o, s) }) {
			out = append(out, s)
		}
	}
	return out
}

// under reports whether dn lies strictly below one of bases, compared in
// canonical form (dn.go): any spelling of a DN is under the same bases.
func under(bases []dnName, dn dnName) bool {
	return slices.ContainsFunc(bases, func(b dnName) bool { return dn.under(b) })
}

// UnderAccountBase reports whether dn is strictly below an account base.
// An unparseable DN is under nothing. An unsure spelling (ExactDN) is
// compared best effort: the write path resolves those through the
// directory first.
func (m *Mapping) UnderAccountBase(dn string) bool {
	d, err := m.dns.parse(dn)
	return err == nil && under(m.accountBases, d)
}

// UnderGroupBase reports whether dn is strictly below a group base.
func (m *Mapping) UnderGroupBase(dn string) bool {
	d, err := m.dns.parse(dn)
	return err == nil && under(m.groupBases, d)
}

// Classify says whether the entry at dn with objectClasses is an account, a
// group or neither. An entry that matches both (say both bases are the same
// subtree and it carries both kinds of classes) is an account: account
// rules are the stricter ones to apply to it.
func (m *Mapping) Classify(dn string, objectClasses []string) Kind {
	d, err := m.dns.parse(dn)
	if err != nil {
		return KindNone
	}
	// One pass over the classes, each canonical name looked up once, and
	// no list of them made: this runs on every write and delivery.
	var account, excluded, group bool
	for _, oc := range objectClasses {
		c := m.canonical(oc)
		account = account || slices.Contains(m.accountClasses, c)
		excluded = excluded || slices.Contains(m.accountExclude, c)
		group = group || slices.Contains(m.groupClasses, c)
	}
	if account && !excluded && under(m.accountBases, d) {
		return KindAccount
	}
	if group && under(m.groupBases, d) {
		return KindGroup
	}
	return KindNone
}

// ClassifyEntry classifies e by its DN and objectClass values.
func (m *Mapping) ClassifyEntry(e Entry) Kind { return m.Classify(e.DN, e.ObjectClasses()) }

// AttrClass says what attr (any of its names, OID or options) means on an
// entry of kind. The name class wins over contact: with the name taken from
// mail, mail is the name (admin only) even though it is also businessEmail.
func (m *Mapping) AttrClass(attr string, kind Kind) AttrClass {
	a := m.canonical(attr)
	switch kind {
	case KindAccount:
		switch {
		case a == m.name:
			return AttrName
		case slices.Contains(m.passwords, a):
			return AttrPassword
		case len(m.contactByAttr[a]) > 0:
			return AttrContact
		case a == m.disabled:
			return AttrDisabled
		}
	case KindGroup:
		switch {
		case a == m.groupName:
			return AttrName
		case slices.Contains(m.members, a):
			return AttrMembership
		}
	}
	return AttrOther
}

// entryNames is the set of canonical names of an entry's attributes,
// which tells lookup at once that an attribute is absent under every name.
// nil: not made (lookup walks the entry).
type entryNames map[string]bool

// entryNames makes e's entryNames.
func (m *Mapping) entryNames(e Entry) entryNames {
	ix := make(entryNames, len(e.Attrs))
	for name := range e.Attrs {
		ix[m.canonical(baseName(name))] = true
	}
	return ix
}

// lookup reads attr from e under any of its names known to the mapping
// (ix, when given, is e's entryNames).
func (m *Mapping) lookup(e Entry, ix entryNames, attr string) (values []string, foundAs string) {
	if ix != nil && !ix[m.canonical(attr)] {
		return nil, attr // under no name at all
	}
	if v := e.Get(attr); len(v) > 0 {
		return v, attr
	}
	// Under another name (an alias or OID); sorted so that an entry holding
	// several spellings always yields the same one.
	want := m.canonical(attr)
	var others []string
	for name := range e.Attrs {
		base := baseName(name)
		if m.canonical(base) == want && !strings.EqualFold(base, attr) {
			others = append(others, base)
		}
	}
	slices.Sort(others)
	for _, base := range others {
		if v := e.Get(base); len(v) > 0 {
			return v, base
		}
	}
	return nil, attr
}

// first is lookup's first non-empty value: the rule for a multi-valued
// attribute mapped to a single field.
// naming reads a name attribute. When the attribute also names the entry
// in its DN and holds several values, the RDN's value wins: after a modify
// DN that kept the old RDN value, the entry's name is the new one.
func (m *Mapping) naming(e Entry, ix entryNames, attr string) (string, bool) {
	values, _ := m.lookup(e, ix, attr)
	if len(values) > 1 {
		// The RDN is read as the gateway reads every DN (a quoted or BER
		// value included); its value matches the attribute's as the
		// directory matches names, ignoring case.
		if avas, err := FirstRDN(e.DN); err == nil {
			for _, ava := range avas {
				if m.canonical(ava.Type) != m.canonical(attr) {
					continue
				}
				for _, v := range values {
					if v == ava.Value {
						return v, true
					}
				}
				for _, v := range values {
					if strings.EqualFold(v, ava.Value) {
						return v, true
					}
				}
			}
		}
	}
	return m.first(e, ix, attr)
}

// SameAttribute reports whether two attribute descriptions name the same
// attribute, through aliases and OIDs (rfc822Mailbox is mail, 2.5.4.0 is
// objectClass) and ignoring options such as ;lang-en.
func (m *Mapping) SameAttribute(a, b string) bool {
	return m.canonical(baseName(a)) == m.canonical(baseName(b))
}

// EntryName is the name an account or group entry has in Axigen, as
// AccountState and GroupState work it out, without checking any value.
func (m *Mapping) EntryName(e Entry, kind Kind) string {
	if kind == KindGroup {
		v, _ := m.naming(e, nil, m.cfg.GroupNameAttribute)
		return v
	}
	v, _ := m.naming(e, nil, m.cfg.NameAttribute)
	if m.cfg.NameFromAddress {
		if at := strings.LastIndexByte(v, '@'); at > 0 {
			v = v[:at]
		}
	}
	return v
}

// CheckName returns the *ValueError that AccountState or GroupState (by
// kind) would give for e's name: missing, or one Axigen cannot take. The
// write path asks it of the entry a write would leave, so that a write
// which leaves an account or group without a name Axigen can take is
// refused, not made in the directory alone.
func (m *Mapping) CheckName(e Entry, kind Kind) error {
	var err error
	switch kind {
	case KindAccount:
		_, err = m.accountName(e, nil)
	case KindGroup:
		_, err = m.groupEntryName(e)
	}
	return err
}

// accountName is the name of an account entry in Axigen, checked.
func (m *Mapping) accountName(e Entry, ix entryNames) (string, error) {
	raw, ok := m.naming(e, ix, m.cfg.NameAttribute)
	if !ok {
		return "", &ValueError{Attr: m.cfg.NameAttribute, Field: FieldName, DN: e.DN, Reason: "missing"}
	}
	name := raw
	if m.cfg.NameFromAddress {
		at := strings.LastIndexByte(raw, '@')
		if at <= 0 {
			return "", &ValueError{Attr: m.cfg.NameAttribute, Field: FieldName, DN: e.DN,
				Reason: "not an e-mail address, so it has no local part to name the account"}
		}
		name = raw[:at]
	}
	if err := checked(e, m.cfg.NameAttribute, FieldName, name); err != nil {
		return "", err
	}
	return name, nil
}

// groupEntryName is the name of a group entry in Axigen, checked.
func (m *Mapping) groupEntryName(e Entry) (string, error) {
	name, ok := m.naming(e, nil, m.cfg.GroupNameAttribute)
	if !ok {
		return "", &ValueError{Attr: m.cfg.GroupNameAttribute, Field: FieldGroupName, DN: e.DN, Reason: "missing"}
	}
	if err := checked(e, m.cfg.GroupNameAttribute, FieldGroupName, name); err != nil {
		return "", err
	}
	return name, nil
}

func (m *Mapping) first(e Entry, ix entryNames, attr string) (string, bool) {
	values, _ := m.lookup(e, ix, attr)
	for _, v := range values {
		if v != "" {
			return v, true
		}
	}
	return "", false
}

// checked validates value for field and names attr and the entry on failure.
func checked(e Entry, attr, field, value string) error {
	if err := ValidateValue(field, value); err != nil {
		var ve *ValueError
		if errors.As(err, &ve) {
			ve.Attr, ve.DN = attr, e.DN
		}
		return err
	}
	return nil
}

func (m *Mapping) ldapID(e Entry, ix entryNames) (string, error) {
	raw, ok := m.first(e, ix, m.cfg.KeyAttribute)
	if !ok {
		return "", &ValueError{Attr: m.cfg.KeyAttribute, Field: FieldLDAPID, DN: e.DN,
			Reason: "missing (it is operational: request it by name)"}
	}
	id := raw
	if m.cfg.KeyFormat == KeyGUID {
		s, err := FormatGUID([]byte(raw))
		if err != nil {
			return "", &ValueError{Attr: m.cfg.KeyAttribute, Field: FieldLDAPID, DN: e.DN, Reason: err.Error()}
		}
		id = s
	}
	if err := checked(e, m.cfg.KeyAttribute, FieldLDAPID, id); err != nil {
		return "", err
	}
	return id, nil
}

// AccountState turns an account entry into the state Axigen should hold.
// Every value is checked with ValidateValue; the first one Axigen cannot
// take is returned as a *ValueError naming its attribute, and nothing is
// altered to make it fit. A multi-valued attribute mapped to one field
// contributes its first value. A password attribute contributes only a
// plaintext value; a hashed one leaves Password empty.
func (m *Mapping) AccountState(e Entry) (Account, error) {
	acct := Account{DN: e.DN, Contact: make(map[string]string, len(ContactFields))}
	if err := checked(e, "", FieldDN, e.DN); err != nil {
		return Account{}, err
	}
	// A dozen attributes are looked up, several of them absent: each
	// absent one cost a walk over the entry's attributes, twice.
	ix := m.entryNames(e)
	name, err := m.accountName(e, ix)
	if err != nil {
		return Account{}, err
	}
	acct.Name = name
	id, err := m.ldapID(e, ix)
	if err != nil {
		return Account{}, err
	}
	acct.LDAPID = id
	for _, field := range ContactFields {
		attr := m.cfg.Contact[field]
		if attr == "" {
			continue
		}
		v, ok := m.first(e, ix, attr)
		if !ok {
			acct.Contact[field] = "" // mapped, and empty in the directory: cleared
			continue
		}
		if err := checked(e, attr, field, v); err != nil {
			return Account{}, err
		}
		acct.Contact[field] = v
	}
	// The first plaintext value of the first password attribute that has
	// one: a hash before it (the directory keeps values in no particular
	// order) must not hide it, or a delivery that is to send the password
	// left in clear would find none and withdraw Axigen's.
password:
	for _, attr := range m.cfg.PasswordAttributes {
		values, as := m.lookup(e, ix, attr)
		for _, v := range values {
			pw, ok, _ := m.decodePassword(as, []byte(v))
			if !ok {
				continue // hashed or unreadable: nothing to mirror, not an error
			}
			if err := checked(e, as, FieldPassword, pw); err != nil {
				return Account{}, err
			}
			acct.Password = pw
			break password
		}
	}
	disabled, err := m.isDisabled(e, ix)
	if err != nil {
		return Account{}, err
	}
	acct.Disabled = disabled
	return acct, nil
}

func (m *Mapping) isDisabled(e Entry, ix entryNames) (bool, error) {
	d := m.cfg.Disabled
	if d.Attribute == "" {
		return false, nil
	}
	v, ok := m.first(e, ix, d.Attribute)
	if !ok {
		return false, nil
	}
	if d.Mask == 0 {
		return !strings.EqualFold(v, "FALSE") && v != "0", nil
	}
	n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
	if err != nil {
		return false, &ValueError{Attr: d.Attribute, Field: "disabled", DN: e.DN, Reason: "not an integer"}
	}
	return n&d.Mask != 0, nil
}

// SkippedMember is a group member that is not mirrored, and why.
type SkippedMember struct {
	DN     string
	Reason string
}

// MemberResolver returns the address (the mail attribute) of the entry at
// memberDN; ok is false when the entry has none or does not exist. The
// caller supplies it because it is the one reading the directory.
type MemberResolver func(memberDN string) (addr string, ok bool, err error)

// uniqueMemberUID matches the optional "#'0101'B" suffix of a uniqueMember
// value (RFC 4517 NameAndOptionalUID).
var uniqueMemberUID = regexp.MustCompile(`#'[01]*'B$`)

// UniqueMemberDN is the DN part of a uniqueMember value: without its
// optional UID (RFC 4517 NameAndOptionalUID, "<dn>#'0101'B").
func UniqueMemberDN(value string) string { return uniqueMemberUID.ReplaceAllString(value, "") }

// GroupState turns a group entry into the state Axigen should hold. Each
// distinct member DN (compared as DNs, case folded) is resolved once;
// members without an address, and values that are not DNs, are left out
// and listed in Group.Skipped. Addresses Axigen cannot take are an error
// (*ValueError naming the mail attribute and the member's DN), as is a
// resolver error.
//
// Members are deduplicated ignoring case in the whole address: RFC 5321
// lets a local part be case-sensitive, but Axigen (like nearly every mail
// server) treats it case-insensitively, so two case variants would be one
// Axigen address. Of such variants the one sorting first by byte value is
// kept, unchanged; the list is sorted by lowercased address, then by byte
// value, so the result is deterministic.
func (m *Mapping) GroupState(e Entry, resolve MemberResolver) (Group, error) {
	g := Group{DN: e.DN}
	if err := checked(e, "", FieldDN, e.DN); err != nil {
		return Group{}, err
	}
	name, err := m.groupEntryName(e)
	if err != nil {
		return Group{}, err
	}
	g.Name = name
	id, err := m.ldapID(e, nil)
	if err != nil {
		return Group{}, err
	}
	g.LDAPID = id

	var seen []*ldap.DN
	byKey := map[string]string{}
	for _, attr := range m.cfg.MemberAttributes {
		if e.hasOption(attr, "range=") {
			// AD sends large member lists in ranges; mirroring a fragment
			// would silently drop members.
			return Group{}, fmt.Errorf("group %q: %s was returned in ranges; read the whole value set before mapping", e.DN, attr)
		}
		values, _ := m.lookup(e, nil, attr)
		for _, v := range values {
			dnText := v
			if m.canonical(attr) == "uniquemember" {
				dnText = UniqueMemberDN(v)
			}
			if strings.TrimSpace(dnText) == "" {
				g.Skipped = append(g.Skipped, SkippedMember{DN: v, Reason: "empty member value"})
				continue
			}
			dn, err := ldap.ParseDN(dnText)
			if err != nil {
				g.Skipped = append(g.Skipped, SkippedMember{DN: v, Reason: "not a DN: " + err.Error()})
				continue
			}
			if slices.ContainsFunc(seen, dn.EqualFold) {
				continue
			}
			seen = append(seen, dn)
			addr, ok, err := resolve(dnText)
			if err != nil {
				return Group{}, fmt.Errorf("group %q: resolving member %q: %w", e.DN, dnText, err)
			}
			if !ok {
				g.Skipped = append(g.Skipped, SkippedMember{DN: dnText, Reason: "no " + m.cfg.MemberMailAttribute})
				continue
			}
			if err := ValidateValue(FieldMember, addr); err != nil {
				// The member's address is another entry's value, which the
				// group's writes do not govern (an entry outside the bases
				// writes its own mail unjudged): left out, as a member
				// without one is, so that it does not hold up every change
				// of the group.
				var ve *ValueError
				reason := err.Error()
				if errors.As(err, &ve) {
					reason = ve.Reason
				}
				g.Skipped = append(g.Skipped, SkippedMember{DN: dnText, Reason: m.cfg.MemberMailAttribute + " is not an address Axigen can list: " + reason})
				continue
			}
			key := strings.ToLower(addr)
			if prev, dup := byKey[key]; !dup || addr < prev {
				byKey[key] = addr
			}
		}
	}
	g.Members = make([]string, 0, len(byKey))
	for _, a := range byKey {
		g.Members = append(g.Members, a)
	}
	slices.SortFunc(g.Members, func(a, b string) int {
		return cmp.Or(strings.Compare(strings.ToLower(a), strings.ToLower(b)), strings.Compare(a, b))
	})
	return g, nil
}
