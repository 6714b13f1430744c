package schema

import "strings"

// A client may name an attribute or object class by any of its names or by
// its OID ("surname", "2.5.4.4" and "sn" are one attribute). Policy must see
// through that, or renaming an account through "0.9.2342.19200300.100.1.1"
// instead of "uid" would slip past the name rule. These tables cover the
// attributes and classes the default mappings use, and dnTypes
// (dntypes.go) every type of slapd's standard schemas; everything else is
// compared by its lowercased name.

// commonAliases hold in both dialects: name or OID -> canonical lowercase name.
var commonAliases = map[string]string{
	"commonname": "cn", "2.5.4.3": "cn",
	"surname": "sn", "2.5.4.4": "sn",
	"gn": "givenname", "2.5.4.42": "givenname",
	"userid": "uid", "0.9.2342.19200300.100.1.1": "uid",
	"rfc822mailbox": "mail", "0.9.2342.19200300.100.1.3": "mail",
	"2.5.4.20":              "telephonenumber",
	"mobiletelephonenumber": "mobile", "0.9.2342.19200300.100.1.41": "mobile",
	"hometelephonenumber": "homephone", "0.9.2342.19200300.100.1.20": "homephone",
	"0.9.2342.19200300.100.1.39": "homepostaladdress",
	"2.5.4.16":                   "postaladdress",
	"2.16.840.1.113730.3.1.241":  "displayname",
	"1.2.840.113556.1.2.13":      "displayname",
	"2.5.4.35":                   "userpassword",
	"2.5.4.31":                   "member",
	"2.5.4.50":                   "uniquemember",
	"2.5.4.0":                    "objectclass",
	"1.3.6.1.1.16.4":             "entryuuid",
	"1.2.840.113556.1.4.221":     "samaccountname",
	"1.2.840.113556.1.4.90":      "unicodepwd",
	"1.2.840.113556.1.4.8":       "useraccountcontrol",
	"1.2.840.113556.1.4.2":       "objectguid",
	"1.2.840.113556.1.2.18":      "othertelephone",
	// object classes
	"2.16.840.1.113730.3.2.2": "inetorgperson",
	"2.5.6.9":                 "groupofnames",
	"2.5.6.17":                "groupofuniquenames",
	"2.5.6.6":                 "person",
	"2.5.6.7":                 "organizationalperson",
	"1.2.840.113556.1.5.9":    "user",
	"1.2.840.113556.1.5.8":    "group",
	"1.2.840.113556.1.3.30":   "computer",
}

// streetAddress differs: in OpenLDAP it is another name of street (2.5.4.9),
// in AD a separate attribute of its own.
var openLDAPAliases = map[string]string{"streetaddress": "street", "2.5.4.9": "street"}
var activeDirectoryAliases = map[string]string{"1.2.840.113556.1.2.256": "streetaddress", "2.5.4.9": "street"}

// aliases is the merged view for one dialect.
type aliases struct{ dialect map[string]string }

func aliasesFor(d Dialect) aliases {
	if d == ActiveDirectory {
		return aliases{activeDirectoryAliases}
	}
	return aliases{openLDAPAliases}
}

// canonicalName reduces an attribute description or class name to the
// lowercase primary name it stands for, dropping options.
func canonicalName(a aliases, desc string) string {
	n := strings.ToLower(baseName(desc))
	if c, ok := a.dialect[n]; ok {
		return c
	}
	if c, ok := commonAliases[n]; ok {
		return c
	}
	if t, ok := dnTypes[n]; ok {
		return t.name
	}
	return n
}
