package slapd

import (
	"bufio"
	"fmt"
	"io"
	"strings"
)

// Fixed locations of Debian's OpenLDAP package.
const (
	SlapdPath   = "/usr/sbin/slapd"
	SlapaddPath = "/usr/sbin/slapadd"
	ModulePath  = "/usr/lib/ldap"
	SchemaDir   = "/etc/ldap/schema"
)

// Sample passwords of the demo users in SampleLDIF (plaintext in the
// directory so that tests can bind as them).
const (
	AlicePassword = "alice-pw"
	BobPassword   = "bob-pw"
	CarolPassword = "carol-pw"
)

// SampleLDIF is the base tree and demo entries for dc=example,dc=com:
// ou=people with alice, bob and carol, and ou=groups with "staff" (alice, bob)
// and "admins" (carol; members of admins may write everything under the
// suffix, see the ACLs in the generated configuration).
var SampleLDIF = sampleLDIF("dc=example,dc=com")

// UserUID is the uid of the i-th generated user (Options.Users), 0-based.
func UserUID(i int) string { return fmt.Sprintf("user%05d", i) }

// UserPassword is the plaintext password of the i-th generated user.
func UserPassword(i int) string { return fmt.Sprintf("pw-user%05d", i) }

// GroupCN is the cn of the g-th generated group (Options.Groups), 0-based.
func GroupCN(g int) string { return fmt.Sprintf("group%05d", g) }

func sampleLDIF(suffix string) string {
	dc := firstRDNValue(suffix)
	staff := "cn=staff,ou=groups," + suffix
	admins := "cn=admins,ou=groups," + suffix
	person := func(uid, given, sn, phone, pw string, groups ...string) string {
		var b strings.Builder
		fmt.Fprintf(&b, "dn: uid=%s,ou=people,%s\n", uid, suffix)
		b.WriteString("objectClass: inetOrgPerson\n")
		fmt.Fprintf(&b, "uid: %s\ncn: %s %s\nsn: %s\ngivenName: %s\n", uid, given, sn, sn, given)
		fmt.Fprintf(&b, "mail: %s@%s.com\ntelephoneNumber: %s\nuserPassword: %s\n", uid, dc, phone, pw)
		// slapadd bypasses the memberof overlay, so the back-links are
		// written here; later writes over LDAP keep them up to date.
		for _, g := range groups {
			fmt.Fprintf(&b, "memberOf: %s\n", g)
		}
		b.WriteString("\n")
		return b.String()
	}
	return fmt.Sprintf(`dn: %[1]s
objectClass: dcObject
objectClass: organization
dc: %[2]s
o: %[2]s

dn: ou=people,%[1]s
objectClass: organizationalUnit
ou: people

dn: ou=groups,%[1]s
objectClass: organizationalUnit
ou: groups

`, suffix, dc) +
		person("alice", "Alice", "Liddell", "+1 555 0101", AlicePassword, staff) +
		person("bob", "Bob", "Builder", "+1 555 0102", BobPassword, staff) +
		person("carol", "Carol", "Danvers", "+1 555 0103", CarolPassword, admins) +
		fmt.Sprintf(`dn: %s
objectClass: groupOfNames
cn: staff
description: all staff
member: uid=alice,ou=people,%[2]s
member: uid=bob,ou=people,%[2]s

dn: %s
objectClass: groupOfNames
cn: admins
description: directory administrators
member: uid=carol,ou=people,%[2]s

`, staff, suffix, admins)
}

// writeGeneratedLDIF writes Options.Users users and Options.Groups groups.
// User i is a member of group i%groups.
func writeGeneratedLDIF(w io.Writer, suffix, dc string, users, groups int) error {
	bw := bufio.NewWriterSize(w, 1<<16)
	for i := 0; i < users; i++ {
		uid := UserUID(i)
		fmt.Fprintf(bw, "dn: uid=%s,ou=people,%s\nobjectClass: inetOrgPerson\nuid: %s\n", uid, suffix, uid)
		fmt.Fprintf(bw, "cn: User %05d\nsn: %05d\ngivenName: User\nmail: %s@%s.com\n", i, i, uid, dc)
		fmt.Fprintf(bw, "telephoneNumber: +1 555 %07d\nuserPassword: %s\n", i, UserPassword(i))
		if groups > 0 {
			fmt.Fprintf(bw, "memberOf: cn=%s,ou=groups,%s\n", GroupCN(i%groups), suffix)
		}
		bw.WriteString("\n")
	}
	for g := 0; g < groups; g++ {
		fmt.Fprintf(bw, "dn: cn=%s,ou=groups,%s\nobjectClass: groupOfNames\ncn: %s\n", GroupCN(g), suffix, GroupCN(g))
		members := 0
		for i := g; i < users; i += groups {
			fmt.Fprintf(bw, "member: uid=%s,ou=people,%s\n", UserUID(i), suffix)
			members++
		}
		if members == 0 { // groupOfNames requires a member
			fmt.Fprintf(bw, "member: uid=alice,ou=people,%s\n", suffix)
		}
		bw.WriteString("\n")
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("write generated LDIF: %w", err)
	}
	return nil
}

// configParams are the values substituted into slapd.conf.
type configParams struct {
	Dir, Suffix, RootDN, RootPW string
	CertFile, KeyFile, CAFile   string // empty: no TLS
	ProxyTo                     string // non-empty: back-ldap instead of mdb
	ExtraConfig                 string
}

func slapdConf(p configParams) string {
	var b strings.Builder
	for _, s := range []string{"core", "cosine", "inetorgperson", "nis"} {
		fmt.Fprintf(&b, "include %s/%s.schema\n", SchemaDir, s)
	}
	fmt.Fprintf(&b, "modulepath %s\n", ModulePath)
	if p.ProxyTo != "" {
		b.WriteString("moduleload back_ldap\n")
	} else {
		b.WriteString("moduleload back_mdb\nmoduleload syncprov\n")
	}
	// memberof also defines the memberOf attribute, which the proxy needs
	// to relay it.
	b.WriteString("moduleload memberof\n")
	fmt.Fprintf(&b, "pidfile %s/slapd.pid\nargsfile %s/slapd.args\n", p.Dir, p.Dir)
	// Tests page through thousands of entries as ordinary users.
	b.WriteString("sizelimit unlimited\ntimelimit unlimited\n")
	if p.CertFile != "" {
		fmt.Fprintf(&b, "TLSCertificateFile %s\nTLSCertificateKeyFile %s\nTLSCACertificateFile %s\n",
			p.CertFile, p.KeyFile, p.CAFile)
	}
	// Global ACLs: the root DSE and schema are public, as on any real server.
	b.WriteString("access to dn.base=\"\" by * read\naccess to dn.base=\"cn=Subschema\" by * read\n\n")

	if p.ProxyTo != "" {
		fmt.Fprintf(&b, "database ldap\nsuffix %q\nuri %q\nchase-referrals no\nprotocol-version 3\n",
			p.Suffix, p.ProxyTo+"/")
		// No rootdn: binds, the admin's included, are relayed upstream.
		b.WriteString("access to * by * read\n")
	} else {
		admins := "cn=admins,ou=groups," + p.Suffix
		fmt.Fprintf(&b, "database mdb\nsuffix %q\nrootdn %q\nrootpw %s\n", p.Suffix, p.RootDN, p.RootPW)
		fmt.Fprintf(&b, "directory %s/db\nmaxsize 1073741824\n", p.Dir)
		b.WriteString("index objectClass eq\nindex uid,mail,cn,member,memberOf eq\nindex entryCSN,entryUUID eq\n")
		// Directory ACLs: a user may change their own password and contact
		// attributes, members of cn=admins may write everything, any
		// authenticated user may read, anonymous may only bind.
		fmt.Fprintf(&b, `access to attrs=userPassword
  by self write
  by group.exact=%[1]q write
  by anonymous auth
  by * none
access to attrs=mail,telephoneNumber,mobile,homePhone,givenName,sn,displayName,homePostalAddress,postalAddress,description
  by self write
  by group.exact=%[1]q write
  by users read
  by * none
access to *
  by group.exact=%[1]q write
  by users read
  by * none
`, admins)
		b.WriteString("overlay memberof\nmemberof-group-oc groupOfNames\nmemberof-member-ad member\nmemberof-refint true\n")
		b.WriteString("overlay syncprov\nsyncprov-checkpoint 100 10\n")
	}
	if p.ExtraConfig != "" {
		b.WriteString(p.ExtraConfig)
		b.WriteString("\n")
	}
	// cn=Monitor lets tests count slapd's open connections.
	fmt.Fprintf(&b, "\ndatabase monitor\naccess to * by dn.exact=%q read by * none\n", p.RootDN)
	return b.String()
}

func firstRDNValue(dn string) string {
	first, _, _ := strings.Cut(dn, ",")
	_, v, ok := strings.Cut(first, "=")
	if !ok {
		return first
	}
	return v
}
