// Package schema knows the directory dialects ldapgate speaks (OpenLDAP and
// Active Directory): which entries are accounts or groups, how their
// attributes map to Axigen's fields, and how an entry's state becomes the
// state Axigen should have. It depends on no other package of ldapgate.
package schema

// ContactFields are the eleven Axigen contact-info fields ldapgate mirrors,
// named exactly as Axigen's ContactInfo context names them.
var ContactFields = []string{
	"firstName", "lastName", "nickName", "personalEmail", "businessEmail",
	"phone", "mobilePhone", "homePhone", "businessPhone", "homeAddress", "businessAddress",
}

// Account is the state Axigen should hold for one directory account.
type Account struct {
	// Name is the account name (the local part of its address) in Axigen.
	Name string
	// LDAPID is the directory's stable key for the entry (entryUUID or
	// objectGUID, as text); Axigen keeps it as "Associated LDAP ID".
	LDAPID string
	// DN is the entry's distinguished name, kept as "Associated LDAP DN".
	DN string
	// Contact holds the contact-info fields ldapgate manages, by their
	// Axigen name (see ContactFields): a present key is the field's value,
	// empty to clear it; a missing key is a field the mapping names no
	// attribute for, left as Axigen has it (someone may keep it by hand).
	Contact map[string]string
	// Password is the plaintext password to set, when one is known. It is
	// empty when the directory holds only a hash (or nothing).
	Password string
	// InitialPassword is used only when the account is created and Password
	// is empty: a plaintext password the directory holds, which need not be
	// set again on every apply (Axigen cannot show it back to compare).
	InitialPassword string
	// Disabled reports a directory account that may not log in.
	Disabled bool
}

// Group is the state Axigen should hold for one directory group.
type Group struct {
	// Name is the group name in Axigen.
	Name string
	// LDAPID is the directory's stable key for the entry.
	LDAPID string
	// DN is the entry's distinguished name.
	DN string
	// Members are the members' e-mail addresses, sorted, without duplicates.
	Members []string
	// Skipped lists member values left out of Members (no address, not a
	// DN) so that callers can report them. It is a diagnostic, not state
	// Axigen holds.
	Skipped []SkippedMember
}
