package schema

import (
	"errors"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

func TestFormatGUID(t *testing.T) {
	tests := []struct {
		name  string
		bytes []byte
		want  string
	}{
		// GUID {6B29FC40-CA47-1067-B31D-00DD010662DA} from .NET's System.Guid
		// documentation, laid out as MS-DTYP 2.3.4.2's packet representation
		// (the byte order AD stores objectGUID in).
		{"MS-DTYP packet order", []byte{0x40, 0xfc, 0x29, 0x6b, 0x47, 0xca, 0x67, 0x10, 0xb3, 0x1d, 0x00, 0xdd, 0x01, 0x06, 0x62, 0xda},
			"6b29fc40-ca47-1067-b31d-00dd010662da"},
		// Atlassian Crowd's GuidHelper documents \67\97\e1\e5... as AD's
		// e5e19767-b5ec-4f15-960f-865c28c015fa.
		{"Crowd example", []byte{0x67, 0x97, 0xe1, 0xe5, 0xec, 0xb5, 0x15, 0x4f, 0x96, 0x0f, 0x86, 0x5c, 0x28, 0xc0, 0x15, 0xfa},
			"e5e19767-b5ec-4f15-960f-865c28c015fa"},
	}
	for _, tt := range tests {
		got, err := FormatGUID(tt.bytes)
		if err != nil || got != tt.want {
			t.Errorf("%s: FormatGUID = %q, %v; want %q", tt.name, got, err, tt.want)
		}
	}
	if _, err := FormatGUID([]byte("6b29fc40-ca47-1067-b31d-00dd010662da")); err == nil {
		t.Error("FormatGUID accepted 36 bytes of text")
	}
}

func TestUnicodePwd(t *testing.T) {
	// "Pa$$w0rd" wrapped in quotes, UTF-16LE, as MS-ADTS describes.
	raw := []byte{'"', 0, 'P', 0, 'a', 0, '$', 0, '$', 0, 'w', 0, '0', 0, 'r', 0, 'd', 0, '"', 0}
	if pw, err := DecodeUnicodePwd(raw); err != nil || pw != "Pa$$w0rd" {
		t.Errorf("DecodeUnicodePwd = %q, %v", pw, err)
	}
	for _, pw := range []string{"x", "héllo wörld", "пароль", "😀 emoji", `quote"inside`} {
		got, err := DecodeUnicodePwd(EncodeUnicodePwd(pw))
		if err != nil || got != pw {
			t.Errorf("round trip %q: got %q, %v", pw, got, err)
		}
	}
	bad := map[string][]byte{
		"odd length":      raw[:len(raw)-1],
		"no quotes":       {'p', 0, 'w', 0},
		"one quote":       {'"', 0},
		"lone surrogate":  {'"', 0, 0x00, 0xd8, '"', 0},
		"lone low surrog": {'"', 0, 0x00, 0xdc, '"', 0},
	}
	for name, b := range bad {
		if _, err := DecodeUnicodePwd(b); err == nil {
			t.Errorf("%s: DecodeUnicodePwd accepted %x", name, b)
		}
	}
}

func TestPlaintextPassword(t *testing.T) {
	ol, ad := openLDAPMapping(t), adMapping(t)
	tests := []struct {
		name   string
		m      *Mapping
		attr   string
		value  []byte
		pw     string
		ok     bool
		reason string
	}{
		{"plain", ol, "userPassword", []byte("s3cret"), "s3cret", true, ""},
		{"SSHA", ol, "userPassword", []byte("{SSHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g="), "", false, "pre-hashed ({SSHA})"},
		{"CRYPT", ol, "userPassword", []byte("{CRYPT}$6$salt$hash"), "", false, "pre-hashed ({CRYPT})"},
		{"lowercase scheme", ol, "userpassword", []byte("{ssha512}abc"), "", false, "pre-hashed ({ssha512})"},
		{"ARGON2", ol, "2.5.4.35", []byte("{ARGON2}$argon2id$v=19$m=65536"), "", false, "pre-hashed ({ARGON2})"},
		{"brace but no scheme", ol, "userPassword", []byte("{not a scheme} pw"), "{not a scheme} pw", true, ""},
		{"empty braces", ol, "userPassword", []byte("{}pw"), "{}pw", true, ""},
		{"empty", ol, "userPassword", nil, "", false, "empty password"},
		{"LF", ol, "userPassword", []byte("a\nb"), "", false, "line break (LF)"},
		{"unicodePwd", ad, "unicodePwd", EncodeUnicodePwd("N3w pass"), "N3w pass", true, ""},
		{"unicodePwd binary option", ad, "unicodePwd;binary", EncodeUnicodePwd("x"), "x", true, ""},
		{"unicodePwd no quotes", ad, "unicodePwd", []byte{'x', 0}, "", false, "not enclosed in double quotes"},
		{"unicodePwd hash-like is literal", ad, "unicodePwd", EncodeUnicodePwd("{SSHA}x"), "{SSHA}x", true, ""},
		{"unicodePwd NUL", ad, "unicodePwd", EncodeUnicodePwd("a\x00b"), "", false, "NUL"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pw, ok, reason := tt.m.PlaintextPassword(tt.attr, tt.value)
			if pw != tt.pw || ok != tt.ok || !strings.Contains(reason, tt.reason) {
				t.Errorf("PlaintextPassword = %q, %v, %q; want %q, %v, ~%q", pw, ok, reason, tt.pw, tt.ok, tt.reason)
			}
		})
	}
}

func TestValidateValue(t *testing.T) {
	tests := []struct {
		field, value string
		reason       string // "" = valid
	}{
		{"firstName", "Jöhn", ""},
		{"firstName", "", "empty"},
		{"firstName", "a\rb", "CR"},
		{"firstName", "a\nb", "LF"},
		{"firstName", "a\x00b", "NUL"},
		{"firstName", "a\u2028b", "line break (U+2028)"},
		{"firstName", "a\u0085b", "line break (U+0085)"},
		{"firstName", "a\x1bb", "control character (U+001B)"},
		{"firstName", "a\x7fb", "control character (U+007F)"},
		{"firstName", "a\xc0b", "UTF-8"},
		{"firstName", strings.Repeat("é", 255), ""},
		{"firstName", strings.Repeat("é", 256), "256 characters, longer than the limit of 255"},
		{"phone", strings.Repeat("1", 255), ""},
		{"businessAddress", "1 Main St$Springfield$USA", ""},
		{"homeAddress", strings.Repeat("x", 1024), ""},
		{"homeAddress", strings.Repeat("x", 1025), "limit of 1024"},
		{"businessEmail", `"odd"@example.com`, ""},
		{"name", "john.doe_1+tag-x", ""},
		{"name", "john doe", "not allowed in a name"},
		{"name", "jöhn", "not allowed in a name"},
		{"name", ".john", "start or end with a dot"},
		{"name", "john.", "start or end with a dot"},
		{"name", "jo..hn", "two dots"},
		{"name", "a@b", "not allowed"},
		{"name", strings.Repeat("a", 64), ""},
		{"name", strings.Repeat("a", 65), "limit of 64"},
		{"groupName", "team", ""},
		{"member", "john@example.com", ""},
		{"member", "john", "not an e-mail address"},
		{"member", "john@", "not an e-mail address"},
		{"member", "jo hn@example.com", "not allowed in an address"},
		{"member", "john@exa_mple.com", "invalid domain"},
		{"member", "john@example..com", "invalid domain"},
		{"member", ".john@example.com", "misplaced dot"},
		{"password", "any printable ' \" \\ $ pw", ""},
		{"password", strings.Repeat("p", 257), "limit of 256"},
		{"ldapID", "6b29fc40-ca47-1067-b31d-00dd010662da", ""},
		{"dn", `cn=Doe\, John\0A,dc=x`, ""},
		{"fax", "1", "unknown Axigen field"},
	}
	for _, tt := range tests {
		err := ValidateValue(tt.field, tt.value)
		if tt.reason == "" {
			if err != nil {
				t.Errorf("ValidateValue(%s, %q) = %v, want nil", tt.field, tt.value, err)
			}
			continue
		}
		var ve *ValueError
		if !errors.As(err, &ve) {
			t.Errorf("ValidateValue(%s, %q) = %v, want *ValueError", tt.field, tt.value, err)
			continue
		}
		if ve.Field != tt.field || !strings.Contains(ve.Reason, tt.reason) {
			t.Errorf("ValidateValue(%s, %q) = %+v, want field %s reason ~%q", tt.field, tt.value, ve, tt.field, tt.reason)
		}
	}
}

func TestConfigYAML(t *testing.T) {
	src := `
dialect: openldap
accountBase: ou=people,dc=example,dc=com
groupBase:
  - ou=groups,dc=example,dc=com
  - ou=lists,dc=example,dc=com
contact:
  personalEmail: otherMailbox
  homeAddress: ""
passwordAttributes: []
`
	var c Config
	if err := yaml.Unmarshal([]byte(src), &c); err != nil {
		t.Fatal(err)
	}
	m, err := NewMapping(c)
	if err != nil {
		t.Fatal(err)
	}
	eff := m.Config()
	if len(eff.AccountBase) != 1 || len(eff.GroupBase) != 2 {
		t.Errorf("bases = %q, %q", eff.AccountBase, eff.GroupBase)
	}
	contact := m.ContactAttributes()
	if contact["personalEmail"] != "otherMailbox" || contact["firstName"] != "givenName" {
		t.Errorf("contact = %v: want configured keys merged over defaults", contact)
	}
	if _, mapped := contact["homeAddress"]; mapped {
		t.Error(`homeAddress: "" should unmap the field`)
	}
	if len(m.PasswordAttributes()) != 0 || m.AttrClass("userPassword", KindAccount) != AttrOther {
		t.Error("passwordAttributes: [] should mean no password attribute")
	}
	if m.NameAttribute() != "uid" || m.KeyAttribute() != "entryUUID" {
		t.Errorf("defaults not applied: %+v", eff)
	}
}

func TestConfigValidate(t *testing.T) {
	ok := Config{Dialect: OpenLDAP, AccountBase: DNList{"dc=x"}}
	tests := []struct {
		name    string
		edit    func(*Config)
		setting string
	}{
		{"missing dialect", func(c *Config) { c.Dialect = "" }, "dialect"},
		{"unknown dialect", func(c *Config) { c.Dialect = "novell" }, "dialect"},
		{"no account base", func(c *Config) { c.AccountBase = nil }, "accountBase"},
		{"bad account base", func(c *Config) { c.AccountBase = DNList{"not a dn"} }, "accountBase"},
		{"bad group base", func(c *Config) { c.GroupBase = DNList{"dc=x,,"} }, "groupBase"},
		{"unknown contact field", func(c *Config) { c.Contact = map[string]string{"fax": "fax"} }, "contact.fax"},
		{"bad contact attr", func(c *Config) { c.Contact = map[string]string{"phone": "tel phone"} }, "contact.phone"},
		{"password as contact", func(c *Config) { c.Contact = map[string]string{"nickName": "userPassword"} }, "contact.nickName"},
		{"password alias as name", func(c *Config) { c.NameAttribute = "2.5.4.35" }, "nameAttribute"},
		{"bad key format", func(c *Config) { c.KeyFormat = "base64" }, "keyFormat"},
		{"bad class", func(c *Config) { c.AccountClasses = []string{"inet org"} }, "accountClasses"},
		{"attribute with option", func(c *Config) { c.NameAttribute = "uid;lang-en" }, "nameAttribute"},
		{"negative mask", func(c *Config) { c.Disabled = &Disabled{Attribute: "x", Mask: -1} }, "disabled.mask"},
	}
	if _, err := NewMapping(ok); err != nil {
		t.Fatalf("baseline config: %v", err)
	}
	for _, tt := range tests {
		c := ok
		tt.edit(&c)
		_, err := NewMapping(c)
		var ce *ConfigError
		if !errors.As(err, &ce) || ce.Setting != tt.setting {
			t.Errorf("%s: err = %v, want ConfigError for %s", tt.name, err, tt.setting)
		}
	}
}

func TestDefaultsMatchDesign(t *testing.T) {
	ol, ad := DefaultConfig(OpenLDAP), DefaultConfig(ActiveDirectory)
	for _, c := range []Config{ol, ad} {
		for _, f := range ContactFields {
			if _, ok := c.Contact[f]; !ok {
				t.Errorf("%s: contact field %s has no default entry", c.Dialect, f)
			}
		}
	}
	if ol.Contact["businessPhone"] != "" || ad.Contact["businessPhone"] != "otherTelephone" ||
		ol.Contact["homeAddress"] != "homePostalAddress" || ad.Contact["homeAddress"] != "homePostalAddress" ||
		ad.Contact["businessAddress"] != "streetAddress" || ol.Contact["personalEmail"] != "" {
		t.Error("defaults differ from docs/architecture.md's mapping table")
	}
}
