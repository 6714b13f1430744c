package gateway

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/ldapgate/ldapgate/internal/ldapwire"
)

// WriteOp names the kind of a write request.
type WriteOp int

// The write operations the relay decodes for interception.
const (
	OpAdd WriteOp = iota + 1
	OpModify
	OpDelete
	OpModifyDN
	OpPasswordModify
)

func (o WriteOp) String() string {
	switch o {
	case OpAdd:
		return "add"
	case OpModify:
		return "modify"
	case OpDelete:
		return "delete"
	case OpModifyDN:
		return "modifyDN"
	case OpPasswordModify:
		return "passwordModify"
	}
	return fmt.Sprintf("WriteOp(%d)", int(o))
}

// ModOp is the operation of one modification in a modify request.
type ModOp int

// Modification operations, numbered as on the wire (RFC 4511, RFC 4525).
const (
	ModAdd       ModOp = 0
	ModDelete    ModOp = 1
	ModReplace   ModOp = 2
	ModIncrement ModOp = 3
)

func (o ModOp) String() string {
	switch o {
	case ModAdd:
		return "add"
	case ModDelete:
		return "delete"
	case ModReplace:
		return "replace"
	case ModIncrement:
		return "increment"
	}
	return fmt.Sprintf("ModOp(%d)", int(o))
}

// Attribute is an attribute description with its values.
type Attribute struct {
	Type   string
	Values [][]byte
}

// Modification is one change of a modify request.
type Modification struct {
	Op ModOp
	Attribute
}

// OIDAssertion is RFC 4528's assertion control. One an Interceptor
// appends (WriteRequest.Append) and the directory finds false is not the
// client's: the client is answered busy (51), with a diagnostic saying the
// entry changed, instead of assertionFailed (122) for a control it never
// sent.
const OIDAssertion = "1.3.6.1.1.12"

// Control is a request or response control, kept as it came.
type Control struct {
	OID      string
	Critical bool
	Value    []byte
	HasValue bool
}

// WriteRequest is a decoded write: what interception sees. The byte slices
// are the request's own copies and stay valid after the call.
type WriteRequest struct {
	MessageID int64
	Op        WriteOp
	// DN is the target entry. For a password modify it is the userIdentity,
	// empty when the request changes the bound user's own password.
	DN string
	// Attributes of an add.
	Attributes []Attribute
	// Changes of a modify.
	Changes []Modification
	// NewRDN, DeleteOldRDN and NewSuperior of a modify DN; NewSuperior is
	// empty when the entry stays under its parent.
	NewRDN       string
	DeleteOldRDN bool
	NewSuperior  string
	// OldPassword and NewPassword of a password modify (RFC 3062); either may
	// be absent, in which case it is nil.
	OldPassword []byte
	NewPassword []byte
	Controls    []Control
	// Append holds request controls the Interceptor adds before the
	// request goes upstream (RFC 4527's post-read, say, to learn the entry
	// as the write left it). The relay sends them after the client's own;
	// the directory's response controls of the same types reach the
	// Completion (Result.Controls) and are taken out of the answer the
	// client gets, which never asked for them. A control type the request
	// carries already must not be appended.
	Append []Control
	// SendNow has the relay send the request to the directory at once,
	// not with the client's next requests: what the Interceptor checked
	// holds for a moment only (a password modify whose target another
	// gateway may rename).
	SendNow bool
}

// bindRequest is the part of a bind the session needs to know.
type bindRequest struct {
	name       string
	simple     bool
	password   []byte // simple bind only; never logged
	mechanism  string // SASL only
	hasVersion bool
	version    int64
}

// element walks BER content one element at a time.
type element struct {
	tag     byte
	content []byte
}

func splitElements(data []byte) ([]element, error) {
	var out []element
	for len(data) > 0 {
		tag, content, rest, err := ldapwire.Next(data)
		if err != nil {
			return nil, err
		}
		out = append(out, element{tag, content})
		data = rest
	}
	return out, nil
}

func copyBytes(b []byte) []byte {
	if b == nil {
		return nil
	}
	return append(make([]byte, 0, len(b)), b...)
}

// decodeControls decodes a Controls content (a SEQUENCE OF Control).
func decodeControls(content []byte) ([]Control, error) {
	if content == nil {
		return nil, nil
	}
	items, err := splitElements(content)
	if err != nil {
		return nil, err
	}
	controls := make([]Control, 0, len(items))
	for _, it := range items {
		if it.tag != ldapwire.TagSequence {
			return nil, errors.New("control is not a SEQUENCE")
		}
		parts, err := splitElements(it.content)
		if err != nil {
			return nil, err
		}
		if len(parts) == 0 || parts[0].tag != ldapwire.TagOctetString {
			return nil, errors.New("control has no controlType")
		}
		c := Control{OID: string(parts[0].content)}
		for _, p := range parts[1:] {
			switch p.tag {
			case ldapwire.TagBoolean:
				c.Critical = berBool(p.content)
			case ldapwire.TagOctetString:
				c.Value, c.HasValue = copyBytes(p.content), true
			default:
				return nil, fmt.Errorf("unexpected element 0x%02x in control", p.tag)
			}
		}
		controls = append(controls, c)
	}
	return controls, nil
}

// berBool reads a BOOLEAN's content as the directory does: BER lets it
// be longer than one octet, and liblber (slapd) reads any non-zero value
// as TRUE. Reading {00 01} as FALSE let a modify DN through the gateway
// as keeping its old RDN value while slapd deleted it.
func berBool(content []byte) bool {
	for _, b := range content {
		if b != 0 {
			return true
		}
	}
	return false
}

// decodeWrite decodes a write request. It returns (nil, nil) for a message
// that is not a write (including extended operations other than password
// modify).
func decodeWrite(m ldapwire.Message) (*WriteRequest, error) {
	req := &WriteRequest{MessageID: m.ID}
	var err error
	switch m.Op {
	case ldapwire.TagAddRequest:
		req.Op = OpAdd
		err = decodeAdd(req, m.OpContent)
	case ldapwire.TagModifyRequest:
		req.Op = OpModify
		err = decodeModify(req, m.OpContent)
	case ldapwire.TagDelRequest:
		req.Op = OpDelete
		req.DN = string(m.OpContent)
	case ldapwire.TagModDNRequest:
		req.Op = OpModifyDN
		err = decodeModDN(req, m.OpContent)
	case ldapwire.TagExtendedRequest:
		name, value, hasValue, xerr := decodeExtended(m.OpContent)
		if xerr != nil {
			return nil, xerr
		}
		if name != ldapwire.OIDPasswordModify {
			return nil, nil
		}
		req.Op = OpPasswordModify
		if hasValue {
			err = decodePasswordModify(req, value)
		}
	default:
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("malformed %s request: %w", req.Op, err)
	}
	if req.Controls, err = decodeControls(m.Controls); err != nil {
		return nil, fmt.Errorf("malformed controls: %w", err)
	}
	return req, nil
}

func decodeAttributes(content []byte) ([]Attribute, error) {
	items, err := splitElements(content)
	if err != nil {
		return nil, err
	}
	attrs := make([]Attribute, 0, len(items))
	for _, it := range items {
		a, err := decodeAttribute(it)
		if err != nil {
			return nil, err
		}
		attrs = append(attrs, a)
	}
	return attrs, nil
}

// decodeAttribute decodes a PartialAttribute SEQUENCE { type, SET OF value }.
func decodeAttribute(it element) (Attribute, error) {
	if it.tag != ldapwire.TagSequence {
		return Attribute{}, errors.New("attribute is not a SEQUENCE")
	}
	parts, err := splitElements(it.content)
	if err != nil {
		return Attribute{}, err
	}
	if len(parts) != 2 || parts[0].tag != ldapwire.TagOctetString || parts[1].tag != 0x31 {
		return Attribute{}, errors.New("attribute must be a type and a SET of values")
	}
	vals, err := splitElements(parts[1].content)
	if err != nil {
		return Attribute{}, err
	}
	a := Attribute{Type: string(parts[0].content), Values: make([][]byte, 0, len(vals))}
	for _, v := range vals {
		if v.tag != ldapwire.TagOctetString {
			return Attribute{}, errors.New("attribute value is not an OCTET STRING")
		}
		a.Values = append(a.Values, copyBytes(v.content))
	}
	return a, nil
}

func decodeAdd(req *WriteRequest, content []byte) error {
	parts, err := splitElements(content)
	if err != nil {
		return err
	}
	if len(parts) != 2 || parts[0].tag != ldapwire.TagOctetString || parts[1].tag != ldapwire.TagSequence {
		return errors.New("add must be an entry DN and an attribute list")
	}
	req.DN = string(parts[0].content)
	req.Attributes, err = decodeAttributes(parts[1].content)
	return err
}

func decodeModify(req *WriteRequest, content []byte) error {
	parts, err := splitElements(content)
	if err != nil {
		return err
	}
	if len(parts) != 2 || parts[0].tag != ldapwire.TagOctetString || parts[1].tag != ldapwire.TagSequence {
		return errors.New("modify must be an object DN and a list of changes")
	}
	req.DN = string(parts[0].content)
	changes, err := splitElements(parts[1].content)
	if err != nil {
		return err
	}
	for _, c := range changes {
		if c.tag != ldapwire.TagSequence {
			return errors.New("change is not a SEQUENCE")
		}
		cp, err := splitElements(c.content)
		if err != nil {
			return err
		}
		if len(cp) != 2 || cp[0].tag != ldapwire.TagEnumerated {
			return errors.New("change must be an operation and an attribute")
		}
		op, err := ldapwire.ParseInt(cp[0].content)
		if err != nil || op < 0 || op > 3 {
			return fmt.Errorf("unknown modify operation %d", op)
		}
		a, err := decodeAttribute(cp[1])
		if err != nil {
			return err
		}
		req.Changes = append(req.Changes, Modification{Op: ModOp(op), Attribute: a})
	}
	return nil
}

func decodeModDN(req *WriteRequest, content []byte) error {
	parts, err := splitElements(content)
	if err != nil {
		return err
	}
	if len(parts) < 3 || len(parts) > 4 || parts[0].tag != ldapwire.TagOctetString ||
		parts[1].tag != ldapwire.TagOctetString || parts[2].tag != ldapwire.TagBoolean {
		return errors.New("modify DN must be an entry, a new RDN, deleteoldrdn and an optional new superior")
	}
	req.DN = string(parts[0].content)
	req.NewRDN = string(parts[1].content)
	req.DeleteOldRDN = berBool(parts[2].content)
	if len(parts) == 4 {
		if parts[3].tag != 0x80 {
			return errors.New("newSuperior must be context tag [0]")
		}
		req.NewSuperior = string(parts[3].content)
	}
	return nil
}

// decodeExtended reads an ExtendedRequest's requestName [0] and optional
// requestValue [1].
func decodeExtended(content []byte) (name string, value []byte, hasValue bool, err error) {
	parts, err := splitElements(content)
	if err != nil {
		return "", nil, false, err
	}
	if len(parts) < 1 || len(parts) > 2 || parts[0].tag != 0x80 {
		return "", nil, false, errors.New("extended request must start with requestName [0]")
	}
	if len(parts) == 2 {
		if parts[1].tag != 0x81 {
			return "", nil, false, errors.New("requestValue must be context tag [1]")
		}
		return string(parts[0].content), parts[1].content, true, nil
	}
	return string(parts[0].content), nil, false, nil
}

// decodePasswordModify reads PasswdModifyRequestValue (RFC 3062).
func decodePasswordModify(req *WriteRequest, value []byte) error {
	tag, content, rest, err := ldapwire.Next(value)
	if err != nil {
		return err
	}
	if tag != ldapwire.TagSequence || len(rest) != 0 {
		return errors.New("password modify value must be one SEQUENCE")
	}
	parts, err := splitElements(content)
	if err != nil {
		return err
	}
	for _, p := range parts {
		switch p.tag {
		case 0x80:
			req.DN = string(p.content)
		case 0x81:
			req.OldPassword = copyBytes(p.content)
		case 0x82:
			req.NewPassword = copyBytes(p.content)
		default:
			return fmt.Errorf("unexpected element 0x%02x in password modify value", p.tag)
		}
	}
	return nil
}

// decodeBind reads a BindRequest.
func decodeBind(content []byte) (bindRequest, error) {
	parts, err := splitElements(content)
	if err != nil {
		return bindRequest{}, err
	}
	if len(parts) != 3 || parts[0].tag != ldapwire.TagInteger || parts[1].tag != ldapwire.TagOctetString {
		return bindRequest{}, errors.New("bind must be a version, a name and an authentication choice")
	}
	var b bindRequest
	if b.version, err = ldapwire.ParseInt(parts[0].content); err != nil {
		return bindRequest{}, err
	}
	b.hasVersion = true
	b.name = string(parts[1].content)
	switch parts[2].tag {
	case 0x80:
		b.simple = true
		b.password = parts[2].content
	case 0xa3:
		sasl, err := splitElements(parts[2].content)
		if err != nil {
			return bindRequest{}, err
		}
		if len(sasl) < 1 || sasl[0].tag != ldapwire.TagOctetString {
			return bindRequest{}, errors.New("SASL credentials need a mechanism")
		}
		b.mechanism = strings.ToUpper(string(sasl[0].content))
	default:
		return bindRequest{}, fmt.Errorf("unsupported authentication choice 0x%02x", parts[2].tag)
	}
	return b, nil
}

// Result is an LDAPResult as the upstream (or the gateway) gave it.
type Result struct {
	Code       int
	MatchedDN  string
	Diagnostic string
	// GeneratedPassword is the genPasswd of a password modify response,
	// when the server chose the new password.
	GeneratedPassword []byte
	Controls          []Control
	// Unanswered is set when the upstream never answered: the outcome of the
	// request is unknown.
	Unanswered bool
}

// decodeResult reads the LDAPResult of a response, its controls, and for
// a password modify response genPasswd.
func decodeResult(m ldapwire.Message, passwordModify bool) (Result, error) {
	lr, err := ldapwire.DecodeResult(m.OpContent)
	if err != nil {
		return Result{}, err
	}
	r := Result{Code: lr.Code, MatchedDN: lr.MatchedDN, Diagnostic: lr.Diagnostic}
	if passwordModify && lr.HasValue {
		if r.GeneratedPassword, err = ldapwire.GeneratedPassword(lr.ResponseValue); err != nil {
			return Result{}, err
		}
	}
	if r.Controls, err = decodeControls(m.Controls); err != nil {
		return Result{}, err
	}
	return r, nil
}

// appendControl appends one Control (RFC 4511 section 4.1.11).
func appendControl(b []byte, c Control) []byte {
	body := ldapwire.AppendTLV(nil, ldapwire.TagOctetString, []byte(c.OID))
	if c.Critical {
		body = append(body, ldapwire.TagBoolean, 1, 0xff)
	}
	if c.HasValue {
		body = ldapwire.AppendTLV(body, ldapwire.TagOctetString, c.Value)
	}
	return ldapwire.AppendTLV(b, ldapwire.TagSequence, body)
}

// withControls re-encodes m with the controls extra after its own.
func withControls(m ldapwire.Message, extra []Control) []byte {
	ctl := append([]byte(nil), m.Controls...)
	for _, c := range extra {
		ctl = appendControl(ctl, c)
	}
	return encodeMessage(m.ID, m.Op, m.OpContent, ctl)
}

// withoutControls re-encodes m without the controls whose type is one of
// oids; it returns m.Raw when m has none of them.
func withoutControls(m ldapwire.Message, oids []string) ([]byte, error) {
	if m.Controls == nil {
		return m.Raw, nil
	}
	items, err := splitElements(m.Controls)
	if err != nil {
		return nil, err
	}
	var kept []byte
	dropped := false
	for _, it := range items {
		oid := ""
		if parts, err := splitElements(it.content); err == nil && len(parts) > 0 {
			oid = string(parts[0].content)
		}
		if slices.Contains(oids, oid) {
			dropped = true
			continue
		}
		kept = ldapwire.AppendTLV(kept, it.tag, it.content)
	}
	if !dropped {
		return m.Raw, nil
	}
	return encodeMessage(m.ID, m.Op, m.OpContent, kept), nil
}

// encodeMessage encodes an LDAPMessage; controls is the content of its
// Controls element, left out when empty.
func encodeMessage(id int64, op byte, opContent, controls []byte) []byte {
	body := ldapwire.AppendInt(make([]byte, 0, len(opContent)+len(controls)+16), ldapwire.TagInteger, id)
	body = ldapwire.AppendTLV(body, op, opContent)
	if len(controls) > 0 {
		body = ldapwire.AppendTLV(body, ldapwire.TagControls, controls)
	}
	return ldapwire.AppendTLV(make([]byte, 0, len(body)+6), ldapwire.TagSequence, body)
}
