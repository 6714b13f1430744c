package schema

import (
	"fmt"
	"slices"
	"strings"

	"github.com/go-ldap/ldap/v3"
	"gopkg.in/yaml.v3"
)

// Dialect names a directory flavour.
type Dialect string

const (
	OpenLDAP        Dialect = "openldap"
	ActiveDirectory Dialect = "activedirectory"
)

// Key formats: how the stable key attribute's value becomes Account.LDAPID.
const (
	KeyText = "text" // the value as is (entryUUID)
	KeyGUID = "guid" // a 16-byte binary GUID rendered by FormatGUID (objectGUID)
)

// DNList is one DN or a list of them; in YAML either a scalar or a sequence.
type DNList []string

// UnmarshalYAML accepts "accountBase: ou=people,dc=x" as well as a list.
func (l *DNList) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind == yaml.ScalarNode {
		*l = DNList{n.Value}
		return nil
	}
	var s []string
	if err := n.Decode(&s); err != nil {
		return err
	}
	*l = s
	return nil
}

// Disabled says how a directory entry marks an account that may not log in.
type Disabled struct {
	// Attribute holding the flag; "" means the dialect has none.
	Attribute string `yaml:"attribute"`
	// Mask, when non-zero, makes Attribute an integer whose bits under Mask
	// mean "disabled" (AD userAccountControl, ACCOUNTDISABLE = 0x2). When
	// zero, any value other than FALSE (case-insensitive) or 0 means
	// disabled (a boolean such as nsAccountLock, or a lock time).
	Mask int64 `yaml:"mask"`
}

// Config is the YAML-friendly description of a Mapping. Unset fields take
// the dialect's defaults (DefaultConfig): a nil list or a missing contact
// key means "default"; an empty list or an empty attribute name means "none".
type Config struct {
	Dialect Dialect `yaml:"dialect"`
	// AccountBase and GroupBase are the subtrees holding accounts and
	// groups. An entry strictly below a base is in scope; the base entry
	// itself is not. GroupBase may be empty: then no group is mirrored.
	AccountBase DNList `yaml:"accountBase"`
	GroupBase   DNList `yaml:"groupBase"`
	// An entry is an account (group) when it has any of AccountClasses
	// (GroupClasses) and none of the Exclude classes.
	AccountClasses        []string `yaml:"accountClasses"`
	AccountExcludeClasses []string `yaml:"accountExcludeClasses"`
	GroupClasses          []string `yaml:"groupClasses"`
	// NameAttribute holds the account name. With NameFromAddress its value
	// is an e-mail address and the name is its local part (e.g. mail).
	NameAttribute   string `yaml:"nameAttribute"`
	NameFromAddress bool   `yaml:"nameFromAddress"`
	// Contact maps Axigen contact fields (ContactFields) to attributes;
	// a field mapped to "" is not mirrored.
	Contact            map[string]string `yaml:"contact"`
	GroupNameAttribute string            `yaml:"groupNameAttribute"`
	// MemberAttributes hold members' DNs; MemberMailAttribute is read from
	// each member entry to get its address.
	MemberAttributes    []string `yaml:"memberAttributes"`
	MemberMailAttribute string   `yaml:"memberMailAttribute"`
	// KeyAttribute is the stable key; KeyFormat is KeyText or KeyGUID
	// (default: KeyGUID for objectGUID, KeyText otherwise).
	KeyAttribute string `yaml:"keyAttribute"`
	KeyFormat    string `yaml:"keyFormat"`
	// PasswordAttributes are written by clients to set a password.
	PasswordAttributes []string  `yaml:"passwordAttributes"`
	Disabled           *Disabled `yaml:"disabled"`
}

// DefaultConfig returns the dialect's defaults (docs/architecture.md's mapping table),
// without bases: those are site-specific.
func DefaultConfig(d Dialect) Config {
	switch d {
	case ActiveDirectory:
		return Config{
			Dialect:               ActiveDirectory,
			AccountClasses:        []string{"user"},
			AccountExcludeClasses: []string{"computer"},
			GroupClasses:          []string{"group"},
			NameAttribute:         "sAMAccountName",
			Contact: map[string]string{
				"firstName": "givenName", "lastName": "sn", "nickName": "displayName",
				"businessEmail": "mail", "personalEmail": "",
				"phone": "telephoneNumber", "mobilePhone": "mobile", "homePhone": "homePhone",
				"businessPhone": "otherTelephone",
				"homeAddress":   "homePostalAddress", "businessAddress": "streetAddress",
			},
			// sAMAccountName rather than cn: it is unique in the domain,
			// as an Axigen group name must be; cn is unique only per container.
			GroupNameAttribute:  "sAMAccountName",
			MemberAttributes:    []string{"member"},
			MemberMailAttribute: "mail",
			KeyAttribute:        "objectGUID",
			KeyFormat:           KeyGUID,
			// AD also takes userPassword as a password when dSHeuristics
			// allows it; listing it makes policy treat it as one.
			PasswordAttributes: []string{"unicodePwd", "userPassword"},
			Disabled:           &Disabled{Attribute: "userAccountControl", Mask: 0x2},
		}
	default:
		return Config{
			Dialect:        d,
			AccountClasses: []string{"inetOrgPerson"},
			GroupClasses:   []string{"groupOfNames", "groupOfUniqueNames"},
			NameAttribute:  "uid",
			Contact: map[string]string{
				"firstName": "givenName", "lastName": "sn", "nickName": "displayName",
				"businessEmail": "mail", "personalEmail": "",
				"phone": "telephoneNumber", "mobilePhone": "mobile", "homePhone": "homePhone",
				"businessPhone": "",
				"homeAddress":   "homePostalAddress", "businessAddress": "postalAddress",
			},
			GroupNameAttribute:  "cn",
			MemberAttributes:    []string{"member", "uniqueMember"},
			MemberMailAttribute: "mail",
			KeyAttribute:        "entryUUID",
			KeyFormat:           KeyText,
			PasswordAttributes:  []string{"userPassword"},
			// ppolicy's lock: present while the account is locked.
			Disabled: &Disabled{Attribute: "pwdAccountLockedTime"},
		}
	}
}

// WithDefaults returns c with every unset field taken from its dialect's
// defaults. Contact is merged key by key.
func (c Config) WithDefaults() Config {
	d := DefaultConfig(c.Dialect)
	out := c
	if out.AccountClasses == nil {
		out.AccountClasses = d.AccountClasses
	}
	if out.AccountExcludeClasses == nil {
		out.AccountExcludeClasses = d.AccountExcludeClasses
	}
	if out.GroupClasses == nil {
		out.GroupClasses = d.GroupClasses
	}
	if out.NameAttribute == "" {
		out.NameAttribute = d.NameAttribute
	}
	contact := make(map[string]string, len(d.Contact))
	for k, v := range d.Contact {
		contact[k] = v
	}
	for k, v := range c.Contact {
		contact[k] = v
	}
	out.Contact = contact
	if out.GroupNameAttribute == "" {
		out.GroupNameAttribute = d.GroupNameAttribute
	}
	if out.MemberAttributes == nil {
		out.MemberAttributes = d.MemberAttributes
	}
	if out.MemberMailAttribute == "" {
		out.MemberMailAttribute = d.MemberMailAttribute
	}
	if out.KeyAttribute == "" {
		out.KeyAttribute = d.KeyAttribute
	}
	if out.KeyFormat == "" {
		out.KeyFormat = KeyText
		if strings.EqualFold(out.KeyAttribute, "objectGUID") {
			out.KeyFormat = KeyGUID
		}
	}
	if out.PasswordAttributes == nil {
		out.PasswordAttributes = d.PasswordAttributes
	}
	if out.Disabled == nil {
		out.Disabled = d.Disabled
	}
	return out
}

// ConfigError names the setting that is wrong.
type ConfigError struct {
	Setting string
	Reason  string
}

func (e *ConfigError) Error() string { return "schema setting " + e.Setting + ": " + e.Reason }

// Validate checks a config (after WithDefaults) and names the first bad
// setting.
func (c Config) Validate() error {
	bad := func(setting, format string, args ...any) error {
		return &ConfigError{Setting: setting, Reason: fmt.Sprintf(format, args...)}
	}
	switch c.Dialect {
	case OpenLDAP, ActiveDirectory:
	case "":
		return bad("dialect", "missing (want %q or %q)", OpenLDAP, ActiveDirectory)
	default:
		return bad("dialect", "unknown dialect %q (want %q or %q)", c.Dialect, OpenLDAP, ActiveDirectory)
	}
	if len(c.AccountBase) == 0 {
		return bad("accountBase", "missing")
	}
	for _, bases := range []struct {
		name string
		dns  DNList
	}{{"accountBase", c.AccountBase}, {"groupBase", c.GroupBase}} {
		for _, s := range bases.dns {
			dn, err := ldap.ParseDN(s)
			if err != nil {
				return bad(bases.name, "%q is not a DN: %v", s, err)
			}
			if len(dn.RDNs) == 0 {
				return bad(bases.name, "empty DN (the whole directory) is not allowed")
			}
		}
	}
	if len(c.AccountClasses) == 0 {
		return bad("accountClasses", "missing")
	}
	if len(c.GroupBase) > 0 && len(c.GroupClasses) == 0 {
		return bad("groupClasses", "missing while groupBase is set")
	}
	for _, list := range []struct {
		name  string
		names []string
	}{
		{"accountClasses", c.AccountClasses}, {"accountExcludeClasses", c.AccountExcludeClasses},
		{"groupClasses", c.GroupClasses}, {"memberAttributes", c.MemberAttributes},
		{"passwordAttributes", c.PasswordAttributes},
	} {
		for _, n := range list.names {
			if !validDescr(n) {
				return bad(list.name, "%q is not an attribute or class name", n)
			}
		}
	}
	for _, one := range []struct{ name, value string }{
		{"nameAttribute", c.NameAttribute}, {"groupNameAttribute", c.GroupNameAttribute},
		{"memberMailAttribute", c.MemberMailAttribute}, {"keyAttribute", c.KeyAttribute},
	} {
		if one.value == "" {
			return bad(one.name, "missing")
		}
		if !validDescr(one.value) {
			return bad(one.name, "%q is not an attribute name", one.value)
		}
	}
	for field, attr := range c.Contact {
		if !slices.Contains(ContactFields, field) {
			return bad("contact."+field, "unknown Axigen contact field (want one of %s)", strings.Join(ContactFields, ", "))
		}
		if attr != "" && !validDescr(attr) {
			return bad("contact."+field, "%q is not an attribute name", attr)
		}
	}
	if c.KeyFormat != KeyText && c.KeyFormat != KeyGUID {
		return bad("keyFormat", "%q (want %q or %q)", c.KeyFormat, KeyText, KeyGUID)
	}
	if c.Disabled != nil {
		if c.Disabled.Attribute != "" && !validDescr(c.Disabled.Attribute) {
			return bad("disabled.attribute", "%q is not an attribute name", c.Disabled.Attribute)
		}
		if c.Disabled.Mask < 0 {
			return bad("disabled.mask", "negative")
		}
	}
	// A password attribute must never double as anything mirrored in the
	// clear, or a password would land in Axigen's contact info or a name.
	aliases := aliasesFor(c.Dialect)
	canon := func(a string) string { return canonicalName(aliases, a) }
	for _, p := range c.PasswordAttributes {
		cp := canon(p)
		for field, attr := range c.Contact {
			if attr != "" && canon(attr) == cp {
				return bad("contact."+field, "%q is a password attribute", attr)
			}
		}
		for _, one := range []struct{ name, value string }{
			{"nameAttribute", c.NameAttribute}, {"groupNameAttribute", c.GroupNameAttribute},
			{"memberMailAttribute", c.MemberMailAttribute}, {"keyAttribute", c.KeyAttribute},
		} {
			if canon(one.value) == cp {
				return bad(one.name, "%q is a password attribute", one.value)
			}
		}
	}
	return nil
}

// validDescr reports whether s is an attribute (or class) description as
// RFC 4512 allows: a keystring or a numeric OID, optionally with options.
func validDescr(s string) bool {
	base, opts := splitOptions(s)
	if len(opts) > 0 {
		return false // the mapping names types; options are the directory's business
	}
	if base == "" {
		return false
	}
	if base[0] >= '0' && base[0] <= '9' {
		for _, arc := range strings.Split(base, ".") {
			if arc == "" {
				return false
			}
			for i := 0; i < len(arc); i++ {
				if arc[i] < '0' || arc[i] > '9' {
					return false
				}
			}
		}
		return true
	}
	for i := 0; i < len(base); i++ {
		c := base[i]
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || i > 0 && (c >= '0' && c <= '9' || c == '-')
		if !ok {
			return false
		}
	}
	return true
}
