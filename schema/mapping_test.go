package schema

import (
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"
)

func openLDAPMapping(t testing.TB) *Mapping {
	t.Helper()
	m, err := NewMapping(Config{
		Dialect:     OpenLDAP,
		AccountBase: DNList{"ou=People,dc=example,dc=com"},
		GroupBase:   DNList{"ou=Groups,dc=example,dc=com"},
	})
	if err != nil {
		t.Fatalf("NewMapping: %v", err)
	}
	return m
}

func adMapping(t testing.TB) *Mapping {
	t.Helper()
	m, err := NewMapping(Config{
		Dialect:     ActiveDirectory,
		AccountBase: DNList{"CN=Users,DC=corp,DC=example,DC=com", "OU=Staff,DC=corp,DC=example,DC=com"},
		GroupBase:   DNList{"OU=Groups,DC=corp,DC=example,DC=com"},
	})
	if err != nil {
		t.Fatalf("NewMapping: %v", err)
	}
	return m
}

func TestClassify(t *testing.T) {
	person := []string{"top", "person", "organizationalPerson", "inetOrgPerson"}
	gon := []string{"top", "groupOfNames"}
	adUser := []string{"top", "person", "organizationalPerson", "user"}
	adComputer := []string{"top", "person", "organizationalPerson", "user", "computer"}
	tests := []struct {
		name    string
		ad      bool
		dn      string
		classes []string
		want    Kind
	}{
		{"account", false, "uid=john,ou=People,dc=example,dc=com", person, KindAccount},
		{"deeper below base", false, "uid=john,ou=Sales,ou=People,dc=example,dc=com", person, KindAccount},
		{"case of types and values", false, "UID=John,OU=people,DC=Example,DC=COM", person, KindAccount},
		{"spaces around = and ,", false, "uid = john , ou = People , dc = example , dc = com", person, KindAccount},
		{"class case and OID", false, "uid=john,ou=People,dc=example,dc=com", []string{"2.16.840.1.113730.3.2.2"}, KindAccount},
		{"class name case", false, "uid=john,ou=People,dc=example,dc=com", []string{"INETORGPERSON"}, KindAccount},
		{"escaped comma in RDN", false, `cn=Doe\, John,ou=People,dc=example,dc=com`, person, KindAccount},
		{"escaped comma fakes base", false, `cn=x\,ou=People\,dc=example\,dc=com,dc=org`, person, KindNone},
		{"hex-escaped comma fakes base", false, `cn=x\2cou=People\2cdc=example\2cdc=com`, person, KindNone},
		{"base entry itself", false, "ou=People,dc=example,dc=com", person, KindNone},
		{"outside base", false, "uid=john,ou=Other,dc=example,dc=com", person, KindNone},
		{"base as suffix of a value", false, "uid=john,ou=NotPeople,dc=example,dc=com", person, KindNone},
		{"parent of base", false, "dc=example,dc=com", person, KindNone},
		{"wrong class", false, "uid=john,ou=People,dc=example,dc=com", []string{"account"}, KindNone},
		{"group", false, "cn=team,ou=Groups,dc=example,dc=com", gon, KindGroup},
		{"groupOfUniqueNames", false, "cn=team,ou=Groups,dc=example,dc=com", []string{"groupOfUniqueNames"}, KindGroup},
		{"group class under account base", false, "cn=team,ou=People,dc=example,dc=com", gon, KindNone},
		{"person under group base", false, "uid=john,ou=Groups,dc=example,dc=com", person, KindNone},
		{"invalid DN", false, "uid=john,,ou=People", person, KindNone},
		{"empty DN", false, "", person, KindNone},
		{"AD user", true, "CN=John Doe,CN=Users,DC=corp,DC=example,DC=com", adUser, KindAccount},
		{"AD user second base", true, "cn=jane,ou=staff,dc=corp,dc=example,dc=com", adUser, KindAccount},
		{"AD computer is not an account", true, "CN=PC1,CN=Users,DC=corp,DC=example,DC=com", adComputer, KindNone},
		{"AD group", true, "CN=Team,OU=Groups,DC=corp,DC=example,DC=com", []string{"top", "group"}, KindGroup},
		{"AD contact object", true, "CN=Ext,CN=Users,DC=corp,DC=example,DC=com", []string{"top", "person", "organizationalPerson", "contact"}, KindNone},
	}
	ol, ad := openLDAPMapping(t), adMapping(t)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := ol
			if tt.ad {
				m = ad
			}
			if got := m.Classify(tt.dn, tt.classes); got != tt.want {
				t.Errorf("Classify(%q, %v) = %v, want %v", tt.dn, tt.classes, got, tt.want)
			}
		})
	}
}

func TestUnderBaseAndEqualDN(t *testing.T) {
	m := openLDAPMapping(t)
	if !m.UnderAccountBase("uid=a,ou=people,dc=example,dc=com") || m.UnderAccountBase("ou=people,dc=example,dc=com") {
		t.Error("UnderAccountBase: want strictly-below semantics")
	}
	if !m.UnderGroupBase("cn=g,ou=groups,dc=example,dc=com") || m.UnderGroupBase("cn=g,ou=people,dc=example,dc=com") {
		t.Error("UnderGroupBase wrong")
	}
	if !EqualDN("UID=A , OU=People,dc=example,dc=com", "uid=a,ou=people,dc=EXAMPLE,dc=com") {
		t.Error("EqualDN should fold case and spaces")
	}
	if EqualDN("uid=a,dc=x", "uid=b,dc=x") || EqualDN("bad", "bad") {
		t.Error("EqualDN: different or invalid DNs must not be equal")
	}
}

func TestEntryGet(t *testing.T) {
	e := Entry{DN: "x", Attrs: map[string][]string{
		"GIVENNAME":               {"John"},
		"givenName;lang-de":       {"Johann"},
		"userCertificate;binary":  {"\x30\x82"},
		"member;range=0-1499":     {"cn=a"},
		"sn":                      {"", "Doe"},
		"objectGUID;binary":       {"nope"},
		"objectGUID":              {"yes"},
		"displayName;lang-fr;x-y": {"J"},
	}}
	tests := []struct {
		attr string
		want []string
	}{
		{"givenName", []string{"John"}},
		{"givenname;binary", []string{"John"}},
		{"userCertificate", []string{"\x30\x82"}},
		{"member", nil},
		{"objectGUID", []string{"yes"}},
		{"displayName", nil},
		{"absent", nil},
	}
	for _, tt := range tests {
		if got := e.Get(tt.attr); !reflect.DeepEqual(got, tt.want) {
			t.Errorf("Get(%q) = %q, want %q", tt.attr, got, tt.want)
		}
	}
	if v, ok := e.First("sn"); !ok || v != "Doe" {
		t.Errorf("First(sn) = %q, %v; want the first non-empty value", v, ok)
	}
}

func TestAttrClass(t *testing.T) {
	ol, ad := openLDAPMapping(t), adMapping(t)
	mailName, err := NewMapping(Config{Dialect: OpenLDAP, AccountBase: DNList{"dc=x"}, NameAttribute: "mail", NameFromAddress: true})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		m    *Mapping
		attr string
		kind Kind
		want AttrClass
	}{
		{ol, "uid", KindAccount, AttrName},
		{ol, "UID", KindAccount, AttrName},
		{ol, "userid", KindAccount, AttrName},
		{ol, "0.9.2342.19200300.100.1.1", KindAccount, AttrName},
		{ol, "uid;lang-en", KindAccount, AttrName},
		{ol, "userPassword", KindAccount, AttrPassword},
		{ol, "2.5.4.35", KindAccount, AttrPassword},
		{ol, "givenName", KindAccount, AttrContact},
		{ol, "gn", KindAccount, AttrContact},
		{ol, "surname", KindAccount, AttrContact},
		{ol, "mail", KindAccount, AttrContact},
		{ol, "homePostalAddress", KindAccount, AttrContact},
		{ol, "postalAddress", KindAccount, AttrContact},
		{ol, "description", KindAccount, AttrOther},
		{ol, "objectClass", KindAccount, AttrOther},
		{ol, "cn", KindGroup, AttrName},
		{ol, "commonName", KindGroup, AttrName},
		{ol, "member", KindGroup, AttrMembership},
		{ol, "uniqueMember", KindGroup, AttrMembership},
		{ol, "2.5.4.50", KindGroup, AttrMembership},
		{ol, "description", KindGroup, AttrOther},
		{ol, "uid", KindNone, AttrOther},
		{ol, "member", KindAccount, AttrOther},
		{ad, "unicodePwd", KindAccount, AttrPassword},
		{ad, "userPassword", KindAccount, AttrPassword},
		{ad, "sAMAccountName", KindAccount, AttrName},
		{ad, "otherTelephone", KindAccount, AttrContact},
		{ad, "streetAddress", KindAccount, AttrContact},
		{ad, "1.2.840.113556.1.2.256", KindAccount, AttrContact},
		{ad, "street", KindAccount, AttrOther},
		{ad, "userAccountControl", KindAccount, AttrDisabled},
		{ad, "member;range=0-*", KindGroup, AttrMembership},
		{ad, "sAMAccountName", KindGroup, AttrName},
		{ad, "cn", KindGroup, AttrOther},
		{mailName, "mail", KindAccount, AttrName},
	}
	for _, tt := range tests {
		if got := tt.m.AttrClass(tt.attr, tt.kind); got != tt.want {
			t.Errorf("%s: AttrClass(%q, %v) = %v, want %v", tt.m.Dialect(), tt.attr, tt.kind, got, tt.want)
		}
	}
	if got := ol.ContactFieldsOf("MAIL"); !reflect.DeepEqual(got, []string{"businessEmail"}) {
		t.Errorf("ContactFieldsOf(MAIL) = %v", got)
	}
}

func TestAccountStateOpenLDAP(t *testing.T) {
	m := openLDAPMapping(t)
	e := Entry{DN: "uid=john,ou=People,dc=example,dc=com", Attrs: map[string][]string{
		"objectClass":       {"top", "inetOrgPerson"},
		"uid":               {"john", "jdoe"},
		"entryUUID":         {"4a6e1c4e-5d5c-103f-8f9a-bd4e6b3f5c11"},
		"givenName":         {"John"},
		"sn":                {"Doe"},
		"displayName":       {"Johnny"},
		"mail":              {"john@example.com", "jd@example.com"},
		"telephoneNumber":   {"+1 555 0100"},
		"mobile":            {"+1 555 0101"},
		"homePhone":         {"+1 555 0102"},
		"homePostalAddress": {"1 Home St$Springfield"},
		"postalAddress":     {"2 Work Ave$Shelbyville"},
		"userPassword":      {"s3cret"},
		"description":       {"not mirrored"},
	}}
	got, err := m.AccountState(e)
	if err != nil {
		t.Fatalf("AccountState: %v", err)
	}
	want := Account{
		Name:   "john",
		LDAPID: "4a6e1c4e-5d5c-103f-8f9a-bd4e6b3f5c11",
		DN:     e.DN,
		Contact: map[string]string{
			"firstName": "John", "lastName": "Doe", "nickName": "Johnny",
			"businessEmail": "john@example.com",
			"phone":         "+1 555 0100", "mobilePhone": "+1 555 0101", "homePhone": "+1 555 0102",
			"homeAddress": "1 Home St$Springfield", "businessAddress": "2 Work Ave$Shelbyville",
		},
		Password: "s3cret",
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("AccountState =\n%+v\nwant\n%+v", got, want)
	}

	e.Attrs["userPassword"] = []string{"{SSHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g="}
	got, err = m.AccountState(e)
	if err != nil || got.Password != "" {
		t.Errorf("hashed password: Password = %q, err = %v; want empty, nil", got.Password, err)
	}
}

func TestAccountStateActiveDirectory(t *testing.T) {
	m := adMapping(t)
	guid := []byte{0x40, 0xfc, 0x29, 0x6b, 0x47, 0xca, 0x67, 0x10, 0xb3, 0x1d, 0x00, 0xdd, 0x01, 0x06, 0x62, 0xda}
	e := Entry{DN: "CN=John Doe,CN=Users,DC=corp,DC=example,DC=com", Attrs: map[string][]string{
		"objectClass":        {"top", "person", "organizationalPerson", "user"},
		"sAMAccountName":     {"jdoe"},
		"objectGUID":         {string(guid)},
		"givenName":          {"John"},
		"sn":                 {"Doe"},
		"mail":               {"john.doe@corp.example.com"},
		"otherTelephone":     {"+44 20 7946 0000", "+44 20 7946 0001"},
		"streetAddress":      {"1 Main Street"},
		"homePostalAddress":  {"12 Home Road"},
		"userAccountControl": {"514"}, // NORMAL_ACCOUNT | ACCOUNTDISABLE
	}}
	got, err := m.AccountState(e)
	if err != nil {
		t.Fatalf("AccountState: %v", err)
	}
	want := Account{
		Name: "jdoe", LDAPID: "6b29fc40-ca47-1067-b31d-00dd010662da", DN: e.DN,
		Contact: map[string]string{
			"firstName": "John", "lastName": "Doe", "businessEmail": "john.doe@corp.example.com",
			"businessPhone": "+44 20 7946 0000", "businessAddress": "1 Main Street", "homeAddress": "12 Home Road",
			// mapped, and empty in the entry: cleared in Axigen
			"nickName": "", "phone": "", "mobilePhone": "", "homePhone": "",
		},
		Disabled: true,
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("AccountState =\n%+v\nwant\n%+v", got, want)
	}
	e.Attrs["userAccountControl"] = []string{"512"}
	if got, err := m.AccountState(e); err != nil || got.Disabled {
		t.Errorf("UAC 512: Disabled = %v, err = %v; want false", got.Disabled, err)
	}
	e.Attrs["userAccountControl"] = []string{"x"}
	var ve *ValueError
	if _, err := m.AccountState(e); !errors.As(err, &ve) || ve.Attr != "userAccountControl" {
		t.Errorf("bad UAC: err = %v, want ValueError naming userAccountControl", err)
	}
}

func TestAccountStateConfigured(t *testing.T) {
	m, err := NewMapping(Config{
		Dialect:         OpenLDAP,
		AccountBase:     DNList{"dc=example,dc=com"},
		NameAttribute:   "mail",
		NameFromAddress: true,
		Contact:         map[string]string{"personalEmail": "otherMailbox", "phone": "", "businessPhone": "telephoneNumber"},
		Disabled:        &Disabled{Attribute: "nsAccountLock"},
	})
	if err != nil {
		t.Fatal(err)
	}
	e := Entry{DN: "uid=x,dc=example,dc=com", Attrs: map[string][]string{
		"mail": {"John.Doe@example.com"}, "entryUUID": {"id-1"}, "otherMailbox": {"john@home.example"},
		"telephoneNumber": {"123"}, "nsAccountLock": {"TRUE"},
	}}
	got, err := m.AccountState(e)
	if err != nil {
		t.Fatal(err)
	}
	want := Account{Name: "John.Doe", LDAPID: "id-1", DN: e.DN, Disabled: true, Contact: map[string]string{
		"businessEmail": "John.Doe@example.com", "personalEmail": "john@home.example", "businessPhone": "123",
		// mapped by the dialect's defaults, and empty in the entry: cleared
		"firstName": "", "lastName": "", "nickName": "", "mobilePhone": "", "homePhone": "",
		"homeAddress": "", "businessAddress": "",
	}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("AccountState =\n%+v\nwant\n%+v", got, want)
	}
	e.Attrs["nsAccountLock"] = []string{"false"}
	if got, _ := m.AccountState(e); got.Disabled {
		t.Error("nsAccountLock=false: want enabled")
	}
}

func TestAccountStateRefusesValues(t *testing.T) {
	m := openLDAPMapping(t)
	base := func() Entry {
		return Entry{DN: "uid=john,ou=People,dc=example,dc=com", Attrs: map[string][]string{
			"uid": {"john"}, "entryUUID": {"u-1"}, "givenName": {"John"},
		}}
	}
	tests := []struct {
		name      string
		attr      string
		value     string
		wantAttr  string
		wantField string
		reason    string
	}{
		{"LF in first name", "givenName", "John\nSET password x", "givenName", "firstName", "line break (LF)"},
		{"CR in phone", "telephoneNumber", "123\r", "telephoneNumber", "phone", "line break (CR)"},
		{"NUL in sn", "sn", "Do\x00e", "sn", "lastName", "NUL"},
		{"tab", "displayName", "a\tb", "displayName", "nickName", "control character (U+0009)"},
		{"invalid UTF-8", "mail", "j\xffn@example.com", "mail", "businessEmail", "UTF-8"},
		{"too long address", "postalAddress", strings.Repeat("a", MaxPostalAddress+1), "postalAddress", "businessAddress", "longer than the limit of 1024"},
		{"space in name", "uid", "john doe", "uid", "name", "not allowed in a name"},
		{"name too long", "uid", strings.Repeat("j", 65), "uid", "name", "longer than the limit of 64"},
		{"missing name", "uid", "", "uid", "name", "missing"},
		{"missing key", "entryUUID", "", "entryUUID", "ldapID", "missing"},
		{"password with LF", "userPassword", "pw\nQUIT", "userPassword", "password", "line break (LF)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := base()
			if tt.value == "" {
				delete(e.Attrs, tt.attr)
			} else {
				e.Attrs[tt.attr] = []string{tt.value}
			}
			_, err := m.AccountState(e)
			var ve *ValueError
			if !errors.As(err, &ve) {
				t.Fatalf("err = %v, want *ValueError", err)
			}
			if ve.Attr != tt.wantAttr || ve.Field != tt.wantField || ve.DN != e.DN || !strings.Contains(ve.Reason, tt.reason) {
				t.Errorf("ValueError = %+v, want attr %s field %s reason ~%q", ve, tt.wantAttr, tt.wantField, tt.reason)
			}
			if !strings.Contains(err.Error(), tt.wantAttr) {
				t.Errorf("message %q does not name the attribute", err)
			}
			if tt.wantField == "password" && strings.Contains(err.Error(), "pw") {
				t.Errorf("message %q leaks the password", err)
			}
		})
	}
}

func TestGroupState(t *testing.T) {
	m := openLDAPMapping(t)
	mail := map[string]string{
		"uid=john,ou=people,dc=example,dc=com":  "john@example.com",
		"uid=jane,ou=people,dc=example,dc=com":  "Jane@Example.com",
		"uid=jane2,ou=people,dc=example,dc=com": "jane@example.com",
		"uid=bob,ou=people,dc=example,dc=com":   "bob@example.com",
	}
	var calls []string
	resolve := func(dn string) (string, bool, error) {
		calls = append(calls, dn)
		for k, v := range mail {
			if EqualDN(k, dn) {
				return v, true, nil
			}
		}
		return "", false, nil
	}
	e := Entry{DN: "cn=team,ou=Groups,dc=example,dc=com", Attrs: map[string][]string{
		"cn":        {"team"},
		"entryUUID": {"g-1"},
		"member": {
			"uid=john,ou=People,dc=example,dc=com",
			"UID=John , OU=people,DC=example,DC=com", // same entry, other spelling
			"uid=jane,ou=People,dc=example,dc=com",
			"uid=nomail,ou=People,dc=example,dc=com",
			"",
		},
		"uniqueMember": {
			"uid=bob,ou=People,dc=example,dc=com#'0101'B",
			"uid=jane2,ou=People,dc=example,dc=com",
			"not a dn",
		},
	}}
	g, err := m.GroupState(e, resolve)
	if err != nil {
		t.Fatalf("GroupState: %v", err)
	}
	if g.Name != "team" || g.LDAPID != "g-1" || g.DN != e.DN {
		t.Errorf("identity = %q %q %q", g.Name, g.LDAPID, g.DN)
	}
	// Jane@Example.com and jane@example.com are one Axigen address; the
	// byte-wise smaller spelling is kept.
	if want := []string{"bob@example.com", "Jane@Example.com", "john@example.com"}; !reflect.DeepEqual(g.Members, want) {
		t.Errorf("Members = %q, want %q", g.Members, want)
	}
	var skipped []string
	for _, s := range g.Skipped {
		skipped = append(skipped, s.DN+": "+s.Reason)
	}
	if len(skipped) != 3 || !slices.ContainsFunc(skipped, func(s string) bool { return strings.HasPrefix(s, "uid=nomail") && strings.HasSuffix(s, "no mail") }) {
		t.Errorf("Skipped = %q, want nomail, empty and not-a-DN", skipped)
	}
	if len(calls) != 5 {
		t.Errorf("resolver called %d times (%q), want once per distinct DN (5)", len(calls), calls)
	}

	t.Run("resolver error", func(t *testing.T) {
		boom := errors.New("directory down")
		_, err := m.GroupState(e, func(string) (string, bool, error) { return "", false, boom })
		if !errors.Is(err, boom) {
			t.Errorf("err = %v, want it to wrap the resolver error", err)
		}
	})
	t.Run("bad member address", func(t *testing.T) {
		// Another entry's value: the member is left out, named with why,
		// and the group is mapped without it.
		g, err := m.GroupState(e, func(dn string) (string, bool, error) { return "x@example.com\nQUIT", true, nil })
		if err != nil || len(g.Members) != 0 || !slices.ContainsFunc(g.Skipped, func(s SkippedMember) bool {
			return strings.HasPrefix(s.DN, "uid=john") && strings.Contains(s.Reason, "mail is not an address Axigen can list: contains a line break")
		}) {
			t.Errorf("GroupState = %+v, %v; want every member left out, naming its address", g, err)
		}
	})
	t.Run("ranged member list", func(t *testing.T) {
		ranged := Entry{DN: e.DN, Attrs: map[string][]string{"cn": {"team"}, "entryUUID": {"g"}, "member;range=0-1499": {"uid=a,dc=x"}}}
		if _, err := m.GroupState(ranged, resolve); err == nil || !strings.Contains(err.Error(), "ranges") {
			t.Errorf("err = %v, want a refusal of a partial member list", err)
		}
	})
	t.Run("bad group name", func(t *testing.T) {
		bad := Entry{DN: e.DN, Attrs: map[string][]string{"cn": {"Domain Users"}, "entryUUID": {"g"}}}
		var ve *ValueError
		if _, err := m.GroupState(bad, resolve); !errors.As(err, &ve) || ve.Attr != "cn" || ve.Field != FieldGroupName {
			t.Errorf("err = %v, want ValueError naming cn", err)
		}
	})
	t.Run("empty group", func(t *testing.T) {
		g, err := m.GroupState(Entry{DN: e.DN, Attrs: map[string][]string{"cn": {"t"}, "entryUUID": {"g"}}}, resolve)
		if err != nil || len(g.Members) != 0 {
			t.Errorf("got %v, %v", g.Members, err)
		}
	})
}

func TestGroupStateActiveDirectory(t *testing.T) {
	m := adMapping(t)
	e := Entry{DN: "CN=Sales Team,OU=Groups,DC=corp,DC=example,DC=com", Attrs: map[string][]string{
		"cn": {"Sales Team"}, "sAMAccountName": {"sales"},
		"objectGUID": {string([]byte{0x67, 0x97, 0xe1, 0xe5, 0xec, 0xb5, 0x15, 0x4f, 0x96, 0x0f, 0x86, 0x5c, 0x28, 0xc0, 0x15, 0xfa})},
		"member":     {"CN=A,CN=Users,DC=corp,DC=example,DC=com", "CN=B,CN=Users,DC=corp,DC=example,DC=com"},
	}}
	g, err := m.GroupState(e, func(dn string) (string, bool, error) {
		return strings.ToLower(dn[3:4]) + "@corp.example.com", true, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	want := Group{Name: "sales", LDAPID: "e5e19767-b5ec-4f15-960f-865c28c015fa", DN: e.DN,
		Members: []string{"a@corp.example.com", "b@corp.example.com"}}
	if !reflect.DeepEqual(g, want) {
		t.Errorf("GroupState = %+v, want %+v", g, want)
	}
}

func TestAccountAttributes(t *testing.T) {
	m := openLDAPMapping(t)
	got := m.AccountAttributes()
	for _, want := range []string{"objectClass", "uid", "entryUUID", "givenName", "postalAddress", "userPassword"} {
		if !slices.Contains(got, want) {
			t.Errorf("AccountAttributes() = %v, missing %s", got, want)
		}
	}
	if g := m.GroupAttributes(); !reflect.DeepEqual(g, []string{"objectClass", "cn", "entryUUID", "member", "uniqueMember"}) {
		t.Errorf("GroupAttributes() = %v", g)
	}
}

func ExampleMapping_Classify() {
	m, _ := NewMapping(Config{Dialect: OpenLDAP, AccountBase: DNList{"ou=people,dc=example,dc=com"}})
	fmt.Println(m.Classify("uid=john,ou=People,dc=Example,dc=com", []string{"inetOrgPerson"}))
	fmt.Println(m.Classify("ou=people,dc=example,dc=com", []string{"inetOrgPerson"}))
	// Output:
	// account
	// none
}

func TestAccountStateReadsAliases(t *testing.T) {
	m := openLDAPMapping(t)
	e := Entry{DN: "uid=j,ou=People,dc=example,dc=com", Attrs: map[string][]string{
		"userid": {"j"}, "entryUUID": {"u"}, "surname": {"Doe"}, "2.5.4.42": {"Jo"},
	}}
	got, err := m.AccountState(e)
	if err != nil || got.Name != "j" || got.Contact["lastName"] != "Doe" || got.Contact["firstName"] != "Jo" {
		t.Errorf("AccountState = %+v, %v; want values found under their aliases", got, err)
	}
	c := m.Config()
	c.Contact["lastName"] = "changed"
	if m.Config().Contact["lastName"] != "sn" {
		t.Error("Config() exposes the mapping's internal map")
	}
}

func TestNameFollowsTheRDN(t *testing.T) {
	m := openLDAPMapping(t)
	// ldapmodrdn without -r keeps the old RDN value beside the new one.
	e := Entry{DN: "uid=robert,ou=People,dc=example,dc=com", Attrs: map[string][]string{
		"objectClass": {"inetOrgPerson"}, "uid": {"bob", "robert"}, "sn": {"B"}, "cn": {"Bob"},
		"entryUUID": {"8c1f9f2e-0d5a-103f-8d8e-6f3b5a1c2d4e"},
	}}
	a, err := m.AccountState(e)
	if err != nil {
		t.Fatal(err)
	}
	if a.Name != "robert" || m.EntryName(e, KindAccount) != "robert" {
		t.Fatalf("name %q / %q, want the RDN's value robert", a.Name, m.EntryName(e, KindAccount))
	}
	g := Entry{DN: "cn=team,ou=Groups,dc=example,dc=com", Attrs: map[string][]string{
		"objectClass": {"groupOfNames"}, "cn": {"staff", "team"},
	}}
	if got := m.EntryName(g, KindGroup); got != "team" {
		t.Fatalf("group name %q, want team", got)
	}
}

// BenchmarkAccountState maps an account read from the directory, as every
// delivery does.
func BenchmarkAccountState(b *testing.B) {
	m, err := NewMapping(Config{Dialect: OpenLDAP, AccountBase: DNList{"ou=People,dc=example,dc=com"}, GroupBase: DNList{"ou=Groups,dc=example,dc=com"}})
	if err != nil {
		b.Fatal(err)
	}
	e := Entry{DN: "uid=john,ou=People,dc=example,dc=com", Attrs: map[string][]string{
		"objectClass":     {"top", "inetOrgPerson"},
		"uid":             {"john"},
		"entryUUID":       {"4a6e1c4e-5d5c-103f-8f9a-bd4e6b3f5c11"},
		"cn":              {"John Doe"},
		"sn":              {"Doe"},
		"mail":            {"john@example.com"},
		"telephoneNumber": {"+1 555 0100"},
		"userPassword":    {"{SSHA}aGFzaGVkcGFzc3dvcmRzYWx0"},
	}}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := m.AccountState(e); err != nil {
			b.Fatal(err)
		}
	}
}

// Spellings of one DN share a canonical form; different DNs do not.
func TestCanonicalDN(t *testing.T) {
	m := openLDAPMapping(t)
	same := []string{
		"uid=bob,ou=people,dc=example,dc=com",
		"UID=Bob, OU=People, DC=Example, DC=Com",
		"0.9.2342.19200300.100.1.1=bob,ou=people,dc=example,dc=com",
		"userid=bob,ou=people,dc=example,dc=com",
	}
	want := m.CanonicalDN(same[0])
	for _, dn := range same[1:] {
		if got := m.CanonicalDN(dn); got != want {
			t.Errorf("CanonicalDN(%q) = %q, want %q", dn, got, want)
		}
	}
	if a, b := m.CanonicalDN("cn=Bob+uid=bob,dc=example,dc=com"), m.CanonicalDN("uid=bob+cn=bob,dc=example,dc=com"); a != b {
		t.Errorf("a multi-valued RDN in two orders: %q and %q", a, b)
	}
	for _, dn := range []string{"uid=bob2,ou=people,dc=example,dc=com", "cn=bob,ou=people,dc=example,dc=com", "uid=bob,ou=people,dc=example,dc=org"} {
		if got := m.CanonicalDN(dn); got == want {
			t.Errorf("CanonicalDN(%q) = %q, the same as another entry's", dn, got)
		}
	}
}
