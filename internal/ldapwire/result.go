package ldapwire

import (
	"errors"
	"fmt"
)

// Context tags inside an LDAPResult and an ExtendedResponse.
const (
	tagReferral      = 0xa3 // [3] Referral
	tagResponseName  = 0x8a // [10] responseName
	tagResponseValue = 0x8b // [11] responseValue
	tagRequestName   = 0x80 // [0] requestName
	tagRequestValue  = 0x81 // [1] requestValue
	tagSimpleAuth    = 0x80 // [0] simple, in a BindRequest
	tagGenPasswd     = 0x80 // [0] genPasswd, in a PasswdModifyResponseValue
)

// Result is an LDAPResult (RFC 4511 section 4.1.9), with the name and
// value an ExtendedResponse may add to it. Decoded, its byte slices are
// copies.
type Result struct {
	Code       int
	MatchedDN  string
	Diagnostic string
	Referrals  []string
	// ResponseName and ResponseValue of an ExtendedResponse; HasValue
	// tells an empty value from none.
	ResponseName  string
	ResponseValue []byte
	HasValue      bool
}

// ResultCode reads just the resultCode at the start of a response
// protocolOp's content: the relay's fast path.
func ResultCode(opContent []byte) (int, bool) {
	tag, content, _, err := Next(opContent)
	if err != nil || tag != TagEnumerated {
		return 0, false
	}
	v, err := ParseInt(content)
	return int(v), err == nil
}

// DecodeResult reads the LDAPResult of a response protocolOp's content,
// and the responseName and responseValue of an extended response.
func DecodeResult(opContent []byte) (Result, error) {
	tag, code, rest, err := Next(opContent)
	if err != nil || tag != TagEnumerated {
		return Result{}, errors.New("response has no LDAPResult")
	}
	c, err := ParseInt(code)
	if err != nil {
		return Result{}, fmt.Errorf("resultCode: %w", err)
	}
	tag, matched, rest, err := Next(rest)
	if err != nil || tag != TagOctetString {
		return Result{}, errors.New("response has no LDAPResult")
	}
	tag, diagnostic, rest, err := Next(rest)
	if err != nil || tag != TagOctetString {
		return Result{}, errors.New("response has no LDAPResult")
	}
	r := Result{Code: int(c), MatchedDN: string(matched), Diagnostic: string(diagnostic)}
	for len(rest) > 0 {
		var content []byte
		if tag, content, rest, err = Next(rest); err != nil {
			return Result{}, fmt.Errorf("after the LDAPResult: %w", err)
		}
		switch tag {
		case tagReferral:
			for len(content) > 0 {
				var uri []byte
				if tag, uri, content, err = Next(content); err != nil || tag != TagOctetString {
					return Result{}, errors.New("malformed referral")
				}
				r.Referrals = append(r.Referrals, string(uri))
			}
		case tagResponseName:
			r.ResponseName = string(content)
		case tagResponseValue:
			r.ResponseValue, r.HasValue = append([]byte{}, content...), true
		}
		// Others (a bind's serverSaslCreds) are the caller's to read.
	}
	return r, nil
}

// GeneratedPassword reads genPasswd from a password modify response's
// value (RFC 3062 section 2); nil when the server did not choose one.
func GeneratedPassword(responseValue []byte) ([]byte, error) {
	tag, content, _, err := Next(responseValue)
	if err != nil || tag != TagSequence {
		return nil, errors.New("malformed password modify response value")
	}
	for len(content) > 0 {
		var v []byte
		if tag, v, content, err = Next(content); err != nil {
			return nil, fmt.Errorf("password modify response value: %w", err)
		}
		if tag == tagGenPasswd {
			return append([]byte{}, v...), nil
		}
	}
	return nil, nil
}
