// Package ldapwire owns LDAP's wire format (RFC 4511) for the whole
// project: framing LDAPMessages off a stream with a size limit, the
// envelope (message ID, protocolOp tag, controls), the table of protocolOp
// tags, LDAPResult decoding, the encoders of the few messages the project
// writes itself, and dialling a directory URL (ldap://, ldaps://, StartTLS).
//
// It works on byte slices in place: a relayed message is framed, its
// envelope read, and forwarded as the bytes that came, with no tree of
// packets. Decoding a whole request (a write for interception, a search
// filter) is left to the package that needs it.
package ldapwire
