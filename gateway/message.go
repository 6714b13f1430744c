package gateway

import "github.com/ldapgate/ldapgate/internal/ldapwire"

// ioBufferSize sizes the buffered writers of each connection, as
// ldapwire.BufferSize does its readers.
const ioBufferSize = ldapwire.BufferSize

// encodeResponse builds an LDAPMessage carrying an LDAPResult of the given
// response protocolOp. Extended responses may carry a responseName.
func encodeResponse(id int64, respTag byte, code int, matchedDN, diagnostic, responseName string) []byte {
	return ldapwire.Response(id, respTag, ldapwire.Result{Code: code, MatchedDN: matchedDN, Diagnostic: diagnostic, ResponseName: responseName})
}
