package store

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"
)

// The journal stores records in a compact binary encoding: encoding/json's
// reflection cost more CPU than anything else on the write path but the
// fsync. Journals written before it hold JSON, which is still read: a
// JSON value starts with '{', a binary one with its format byte.
//
// Record, format 1: the format byte, then the fields in declaration order
// (Secret excepted, it is never stored): numbers as varints, strings and
// lists as a length followed by their content, times as described at
// appendTime. Token, last, is written only when set, or (empty) before
// MayTake, which follows it only when the record has some. Commands carry
// records in this format (see appendCommand):
// the Raft log stays readable by the nodes of the previous version while
// a cluster is upgraded one node at a time, but for the records with
// MayTake (a write that may reveal a name), which they refuse.
//
// Record, format 2, what the journal stores in Badger since: the same
// record in fewer bytes, so that each of a record's versions (its Prepare,
// its Commit, its outcome) costs Badger's log, memtable and tables less.
// See appendStoredRecord.
const (
	recordFormat1 byte = 1
	recordFormat2 byte = 2
)

var errCorrupt = errors.New("truncated or corrupt value")

// encodeRecord returns r in format 1, as commands carry it.
func encodeRecord(r *Record) []byte {
	return appendRecord(make([]byte, 0, r.encodedSizeHint()), r)
}

// encodeStoredRecord returns r as the journal stores it (format 2).
func encodeStoredRecord(r *Record) []byte {
	return appendStoredRecord(make([]byte, 0, r.storedSizeHint()), r)
}

// storedSizeHint is about the size of r's format 2 encoding: a little
// more for a record of usual times and texts of less than 16 KiB, so that
// its buffer is allocated once and not much larger (encodedSizeHint's
// bound would be half again as large as a usual record).
func (r *Record) storedSizeHint() int {
	n := 32 + len(r.DN) // format, flags, sequence number, codes, attempts
	for _, s := range [...]string{r.Actor, r.ClientAddr, r.EntryKey, r.NewDN, r.Name, r.LastError, r.Note} {
		if s != "" {
			n += 2 + len(s)
		}
	}
	for _, t := range [...]time.Time{r.Time, r.NextAttempt, r.DeliveredAt} {
		if !t.IsZero() {
			n += 14
		}
	}
	if !r.Token.IsZero() {
		n += len(r.Token)
	}
	for _, s := range [...]string{string(r.Kind), string(r.Op), string(r.State), string(r.SecretState)} {
		if len(s) > len(StateCommitted) {
			n += 2 + len(s) // not one the codes know
		}
	}
	if len(r.Groups) > 0 {
		n += 2
		for _, g := range r.Groups {
			n += 2 + len(g)
		}
	}
	if len(r.MayTake) > 0 {
		n += 2
		for _, g := range r.MayTake {
			n += 2 + len(g)
		}
	}
	if len(r.Changes) > 0 {
		n += 2
		for _, c := range r.Changes {
			n += 5 + len(c.Attr)
			if len(c.Op) > len("increment") {
				n += 2 + len(c.Op)
			}
			for _, v := range c.Values {
				n += 2 + len(v)
			}
		}
	}
	return n
}

// Which of a record's optional fields a format 2 encoding holds; a field
// left out is empty (zero). The common ones come first, so that the
// flags of most records take one byte.
const (
	hasTime uint64 = 1 << iota
	hasActor
	hasClientAddr
	hasEntryKey
	hasChanges
	hasNextAttempt
	hasToken // a cluster's records
	hasAttempts
	hasNewDN
	hasName
	hasGroups
	hasLastError
	hasDeliveredAt
	hasNote
	hasMayTake // a record that may reveal a name (Record.MayTake)
	hasAll     = hasMayTake<<1 - 1
)

// The codes of the texts a record takes from a short list (see
// appendCode): the values stored, never reorder or reuse one. Arrays, so
// that the lists cost no allocation.
func kindCodes() [2]string { return [...]string{string(KindAccount), string(KindGroup)} }
func opCodes() [5]string {
	return [...]string{string(OpAdd), string(OpModify), string(OpDelete), string(OpRename), string(OpPassword)}
}
func stateCodes() [4]string {
	return [...]string{string(StatePrepared), string(StateCommitted), string(StateDelivered), string(StateDead)}
}
func secretCodes() [3]string {
	return [...]string{string(SecretNone), string(SecretEncrypted), string(SecretErased)}
}
func changeCodes() [4]string { return [...]string{"add", "delete", "replace", "increment"} }

// appendStoredRecord appends r in format 2: the format byte, the flags
// (a uvarint, has...), the sequence number, the kind, operation, state
// and secret state as codes (appendCode), the DN, then the optional
// fields the flags name, in the order of the flags: times as at appendTime
// but without the leading byte, the times after the record's own with
// their seconds counted from its seconds, the token as its 16 bytes; a
// change is its operation as a code, its attribute and its values.
func appendStoredRecord(buf []byte, r *Record) []byte {
	var flags uint64
	for _, f := range [...]struct {
		set  bool
		flag uint64
	}{
		{!r.Time.IsZero(), hasTime}, {r.Actor != "", hasActor}, {r.ClientAddr != "", hasClientAddr},
		{r.EntryKey != "", hasEntryKey}, {len(r.Changes) > 0, hasChanges}, {!r.NextAttempt.IsZero(), hasNextAttempt},
		{!r.Token.IsZero(), hasToken}, {r.Attempts != 0, hasAttempts}, {r.NewDN != "", hasNewDN}, {r.Name != "", hasName},
		{len(r.Groups) > 0, hasGroups}, {r.LastError != "", hasLastError}, {!r.DeliveredAt.IsZero(), hasDeliveredAt},
		{r.Note != "", hasNote}, {len(r.MayTake) > 0, hasMayTake},
	} {
		if f.set {
			flags |= f.flag
		}
	}
	buf = append(buf, recordFormat2)
	buf = binary.AppendUvarint(buf, flags)
	buf = binary.AppendUvarint(buf, r.Seq)
	kinds, ops, states, secrets := kindCodes(), opCodes(), stateCodes(), secretCodes()
	buf = appendCode(buf, string(r.Kind), kinds[:])
	buf = appendCode(buf, string(r.Op), ops[:])
	buf = appendCode(buf, string(r.State), states[:])
	buf = appendCode(buf, string(r.SecretState), secrets[:])
	buf = appendString(buf, r.DN)
	var base int64 // the seconds the later times count from
	if flags&hasTime != 0 {
		base = r.Time.Unix()
		buf = appendTimeFrom(buf, r.Time, 0)
	}
	if flags&hasActor != 0 {
		buf = appendString(buf, r.Actor)
	}
	if flags&hasClientAddr != 0 {
		buf = appendString(buf, r.ClientAddr)
	}
	if flags&hasEntryKey != 0 {
		buf = appendString(buf, r.EntryKey)
	}
	if flags&hasChanges != 0 {
		changes := changeCodes()
		buf = binary.AppendUvarint(buf, uint64(len(r.Changes)))
		for _, c := range r.Changes {
			buf = appendCode(buf, c.Op, changes[:])
			buf = appendString(buf, c.Attr)
			buf = binary.AppendUvarint(buf, uint64(len(c.Values)))
			for _, v := range c.Values {
				buf = appendString(buf, v)
			}
		}
	}
	if flags&hasNextAttempt != 0 {
		buf = appendTimeFrom(buf, r.NextAttempt, base)
	}
	if flags&hasToken != 0 {
		buf = append(buf, r.Token[:]...)
	}
	if flags&hasAttempts != 0 {
		buf = binary.AppendVarint(buf, int64(r.Attempts))
	}
	if flags&hasNewDN != 0 {
		buf = appendString(buf, r.NewDN)
	}
	if flags&hasName != 0 {
		buf = appendString(buf, r.Name)
	}
	if flags&hasGroups != 0 {
		buf = binary.AppendUvarint(buf, uint64(len(r.Groups)))
		for _, g := range r.Groups {
			buf = appendString(buf, g)
		}
	}
	if flags&hasLastError != 0 {
		buf = appendString(buf, r.LastError)
	}
	if flags&hasDeliveredAt != 0 {
		buf = appendTimeFrom(buf, r.DeliveredAt, base)
	}
	if flags&hasNote != 0 {
		buf = appendString(buf, r.Note)
	}
	if flags&hasMayTake != 0 {
		buf = binary.AppendUvarint(buf, uint64(len(r.MayTake)))
		for _, n := range r.MayTake {
			buf = appendString(buf, n)
		}
	}
	return buf
}

// appendCode appends s as one byte, its place in codes counted from 1,
// or, for a text not in codes, a 0 byte and the text.
func appendCode(buf []byte, s string, codes []string) []byte {
	for i, c := range codes {
		if s == c {
			return append(buf, byte(i+1))
		}
	}
	return appendString(append(buf, 0), s)
}

// appendTimeFrom appends a time that is not zero as appendTime does but
// without the leading byte, its seconds counted from base.
func appendTimeFrom(buf []byte, t time.Time, base int64) []byte {
	_, offset := t.Zone()
	buf = binary.AppendVarint(buf, t.Unix()-base)
	buf = binary.AppendUvarint(buf, uint64(t.Nanosecond()))
	return binary.AppendVarint(buf, int64(offset))
}

// encodedSizeHint is at least the size of the record's encoding for a
// record with no unusually large numbers, so that encoding it allocates
// once.
func (r *Record) encodedSizeHint() int {
	n := 96 + len(r.Token) + len(r.Actor) + len(r.ClientAddr) + len(r.Kind) + len(r.Op) + len(r.DN) + len(r.NewDN) +
		len(r.EntryKey) + len(r.Name) + len(r.SecretState) + len(r.State) + len(r.LastError) + len(r.Note)
	for _, g := range r.Groups {
		n += 3 + len(g)
	}
	for _, g := range r.MayTake {
		n += 3 + len(g)
	}
	for _, c := range r.Changes {
		n += 9 + len(c.Op) + len(c.Attr)
		for _, v := range c.Values {
			n += 3 + len(v)
		}
	}
	return n
}

func appendRecord(buf []byte, r *Record) []byte {
	buf = append(buf, recordFormat1)
	buf = binary.AppendUvarint(buf, r.Seq)
	buf = appendTime(buf, r.Time)
	buf = appendString(buf, r.Actor)
	buf = appendString(buf, r.ClientAddr)
	buf = appendString(buf, string(r.Kind))
	buf = appendString(buf, string(r.Op))
	buf = appendString(buf, r.DN)
	buf = appendString(buf, r.NewDN)
	buf = appendString(buf, r.EntryKey)
	buf = appendString(buf, r.Name)
	buf = binary.AppendUvarint(buf, uint64(len(r.Groups)))
	for _, g := range r.Groups {
		buf = appendString(buf, g)
	}
	buf = binary.AppendUvarint(buf, uint64(len(r.Changes)))
	for _, c := range r.Changes {
		buf = appendString(buf, c.Op)
		buf = appendString(buf, c.Attr)
		buf = binary.AppendUvarint(buf, uint64(len(c.Values)))
		for _, v := range c.Values {
			buf = appendString(buf, v)
		}
	}
	buf = appendString(buf, string(r.SecretState))
	buf = appendString(buf, string(r.State))
	buf = binary.AppendVarint(buf, int64(r.Attempts))
	buf = appendTime(buf, r.NextAttempt)
	buf = appendString(buf, r.LastError)
	buf = appendTime(buf, r.DeliveredAt)
	buf = appendString(buf, r.Note)
	if !r.Token.IsZero() || len(r.MayTake) > 0 {
		// Optional, last: records without a token (a lone journal's, and
		// every record written before tokens) keep their encoding. A
		// record with MayTake has it after the token, which is then
		// written empty when the record has none.
		var tok string
		if !r.Token.IsZero() {
			tok = string(r.Token[:])
		}
		buf = appendString(buf, tok)
	}
	if len(r.MayTake) > 0 {
		buf = binary.AppendUvarint(buf, uint64(len(r.MayTake)))
		for _, n := range r.MayTake {
			buf = appendString(buf, n)
		}
	}
	return buf
}

func appendString(buf []byte, s string) []byte {
	buf = binary.AppendUvarint(buf, uint64(len(s)))
	return append(buf, s...)
}

// appendTime encodes a time as a 0 byte when it is zero, else as a 1 byte,
// the Unix seconds, the nanoseconds and the zone's offset from UTC in
// seconds. Like JSON, it keeps the instant and the offset, not the zone's
// name nor the monotonic clock.
func appendTime(buf []byte, t time.Time) []byte {
	if t.IsZero() {
		return append(buf, 0)
	}
	_, offset := t.Zone()
	buf = append(buf, 1)
	buf = binary.AppendVarint(buf, t.Unix())
	buf = binary.AppendUvarint(buf, uint64(t.Nanosecond()))
	return binary.AppendVarint(buf, int64(offset))
}

// decodeRecord reads a stored record, binary or JSON.
func decodeRecord(b []byte) (*Record, error) {
	if len(b) > 0 && b[0] == '{' {
		var r Record
		if err := json.Unmarshal(b, &r); err != nil {
			return nil, fmt.Errorf("decode record: %w", err)
		}
		return &r, nil
	}
	if len(b) == 0 || (b[0] != recordFormat1 && b[0] != recordFormat2) {
		return nil, fmt.Errorf("decode record: unknown format")
	}
	// One string holds every text of the record: one allocation instead of
	// one per field.
	d := decoder{s: string(b[1:])}
	var r *Record
	if b[0] == recordFormat2 {
		r = d.storedRecord()
	} else {
		r = d.record()
	}
	if d.err != nil {
		return nil, fmt.Errorf("decode record: %w", d.err)
	}
	if d.off != len(d.s) {
		return nil, fmt.Errorf("decode record: %d bytes left over: %w", len(d.s)-d.off, errCorrupt)
	}
	return r, nil
}

// decoder reads a binary value. The first error sticks; reads after it
// return zero values.
type decoder struct {
	s   string
	off int
	err error
}

func (d *decoder) fail() {
	if d.err == nil {
		d.err = errCorrupt
	}
	d.off = len(d.s)
}

func (d *decoder) byte() byte {
	if d.off >= len(d.s) {
		d.fail()
		return 0
	}
	c := d.s[d.off]
	d.off++
	return c
}

func (d *decoder) uvarint() uint64 {
	var x uint64
	for shift := uint(0); shift < 64; shift += 7 {
		c := d.byte()
		if d.err != nil {
			return 0
		}
		x |= uint64(c&0x7f) << shift
		if c < 0x80 {
			return x
		}
	}
	d.fail()
	return 0
}

func (d *decoder) varint() int64 {
	ux := d.uvarint()
	x := int64(ux >> 1)
	if ux&1 != 0 {
		x = ^x
	}
	return x
}

// count reads the length of a list whose items take at least one byte
// each, so that a corrupt length cannot make a huge allocation.
func (d *decoder) count() int {
	n := d.uvarint()
	if n > uint64(len(d.s)-d.off) {
		d.fail()
		return 0
	}
	return int(n)
}

// strings reads a list of strings (nil when empty).
func (d *decoder) strings() []string {
	n := d.count()
	if n == 0 {
		return nil
	}
	l := make([]string, n)
	for i := range l {
		l[i] = d.string()
	}
	return l
}

func (d *decoder) string() string {
	n := d.count()
	s := d.s[d.off : d.off+n]
	d.off += n
	return s
}

func (d *decoder) time() time.Time {
	switch d.byte() {
	case 0:
		return time.Time{}
	case 1:
	default:
		d.fail()
		return time.Time{}
	}
	return d.timeFrom(0)
}

// timeFrom reads what appendTimeFrom wrote.
func (d *decoder) timeFrom(base int64) time.Time {
	sec := d.varint() + base
	nsec := d.uvarint()
	offset := d.varint()
	if d.err != nil || nsec >= 1e9 || offset != int64(int32(offset)) {
		d.fail()
		return time.Time{}
	}
	t := time.Unix(sec, int64(nsec))
	// As time.Parse does with an RFC 3339 time: UTC for a zero offset, the
	// local zone when it has this offset then, else a zone of no name.
	if offset == 0 {
		return t.UTC()
	}
	t = t.Local()
	if _, off := t.Zone(); off != int(offset) {
		t = t.In(time.FixedZone("", int(offset)))
	}
	return t
}

func (d *decoder) record() *Record {
	r := &Record{}
	r.Seq = d.uvarint()
	r.Time = d.time()
	r.Actor = d.string()
	r.ClientAddr = d.string()
	r.Kind = Kind(d.string())
	r.Op = Op(d.string())
	r.DN = d.string()
	r.NewDN = d.string()
	r.EntryKey = d.string()
	r.Name = d.string()
	r.Groups = d.strings()
	if n := d.count(); n > 0 {
		r.Changes = make([]Change, n)
		for i := range r.Changes {
			c := &r.Changes[i]
			c.Op = d.string()
			c.Attr = d.string()
			c.Values = d.strings()
		}
	}
	r.SecretState = SecretState(d.string())
	r.State = State(d.string())
	attempts := d.varint()
	if attempts != int64(int(attempts)) {
		d.fail()
	}
	r.Attempts = int(attempts)
	r.NextAttempt = d.time()
	r.LastError = d.string()
	r.DeliveredAt = d.time()
	r.Note = d.string()
	if d.off < len(d.s) {
		// The optional token: the decoder spans the record alone.
		switch t := d.string(); len(t) {
		case len(r.Token):
			copy(r.Token[:], t)
		case 0:
			// None, written before MayTake alone.
			if d.off == len(d.s) {
				d.fail()
			}
		default:
			d.fail()
		}
	}
	if d.off < len(d.s) {
		// MayTake, written only when there are some.
		if r.MayTake = d.strings(); len(r.MayTake) == 0 {
			d.fail()
		}
	}
	if d.err != nil {
		return nil
	}
	return r
}

// storedRecord reads a record in format 2 (see appendStoredRecord).
func (d *decoder) storedRecord() *Record {
	r := &Record{}
	flags := d.uvarint()
	if flags&^hasAll != 0 {
		d.fail()
		return nil
	}
	r.Seq = d.uvarint()
	kinds, ops, states, secrets := kindCodes(), opCodes(), stateCodes(), secretCodes()
	r.Kind = Kind(d.code(kinds[:]))
	r.Op = Op(d.code(ops[:]))
	r.State = State(d.code(states[:]))
	r.SecretState = SecretState(d.code(secrets[:]))
	r.DN = d.string()
	var base int64
	if flags&hasTime != 0 {
		r.Time = d.timeFrom(0)
		base = r.Time.Unix()
	}
	if flags&hasActor != 0 {
		r.Actor = d.string()
	}
	if flags&hasClientAddr != 0 {
		r.ClientAddr = d.string()
	}
	if flags&hasEntryKey != 0 {
		r.EntryKey = d.string()
	}
	if flags&hasChanges != 0 {
		if n := d.count(); n > 0 {
			changes := changeCodes()
			r.Changes = make([]Change, n)
			for i := range r.Changes {
				c := &r.Changes[i]
				c.Op = d.code(changes[:])
				c.Attr = d.string()
				c.Values = d.strings()
			}
		}
	}
	if flags&hasNextAttempt != 0 {
		r.NextAttempt = d.timeFrom(base)
	}
	if flags&hasToken != 0 {
		if len(d.s)-d.off < len(r.Token) {
			d.fail()
		} else {
			d.off += copy(r.Token[:], d.s[d.off:])
		}
	}
	if flags&hasAttempts != 0 {
		attempts := d.varint()
		if attempts != int64(int(attempts)) {
			d.fail()
		}
		r.Attempts = int(attempts)
	}
	if flags&hasNewDN != 0 {
		r.NewDN = d.string()
	}
	if flags&hasName != 0 {
		r.Name = d.string()
	}
	if flags&hasGroups != 0 {
		r.Groups = d.strings()
	}
	if flags&hasLastError != 0 {
		r.LastError = d.string()
	}
	if flags&hasDeliveredAt != 0 {
		r.DeliveredAt = d.timeFrom(base)
	}
	if flags&hasNote != 0 {
		r.Note = d.string()
	}
	if flags&hasMayTake != 0 {
		r.MayTake = d.strings()
	}
	if d.err != nil {
		return nil
	}
	return r
}

// code reads what appendCode wrote.
func (d *decoder) code(codes []string) string {
	c := d.byte()
	switch {
	case c == 0:
		return d.string()
	case int(c) <= len(codes):
		return codes[c-1]
	}
	d.fail()
	return ""
}

// validText is s as encoding/json carries it: each byte that is not part
// of valid UTF-8 becomes U+FFFD.
func validText(s string) string {
	if utf8.ValidString(s) {
		return s
	}
	var b strings.Builder
	b.Grow(len(s) + 8)
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && n == 1 {
			b.WriteRune(utf8.RuneError)
		} else {
			b.WriteString(s[i : i+n])
		}
		i += n
	}
	return b.String()
}

// isValidText reports whether every text of r is valid UTF-8.
func (r *Record) isValidText() bool {
	for _, s := range [...]string{r.Actor, r.ClientAddr, string(r.Kind), string(r.Op), r.DN, r.NewDN, r.EntryKey,
		r.Name, string(r.SecretState), string(r.State), r.LastError, r.Note} {
		if !utf8.ValidString(s) {
			return false
		}
	}
	for _, g := range r.Groups {
		if !utf8.ValidString(g) {
			return false
		}
	}
	for _, n := range r.MayTake {
		if !utf8.ValidString(n) {
			return false
		}
	}
	for _, c := range r.Changes {
		if !utf8.ValidString(c.Op) || !utf8.ValidString(c.Attr) {
			return false
		}
		for _, v := range c.Values {
			if !utf8.ValidString(v) {
				return false
			}
		}
	}
	return true
}

// makeValidText turns r's texts into what a JSON round trip makes of them
// (see validText), as the journal has always stored them (the former
// standby feed carried records as JSON): a record then reads the same
// wherever it goes out as JSON or LDAP text (the admin socket, the CLI,
// the changelog). The lists are replaced, not changed: record versions
// share them.
func (r *Record) makeValidText() {
	if r.isValidText() {
		return
	}
	r.Actor, r.ClientAddr, r.DN, r.NewDN = validText(r.Actor), validText(r.ClientAddr), validText(r.DN), validText(r.NewDN)
	r.Kind, r.Op = Kind(validText(string(r.Kind))), Op(validText(string(r.Op)))
	r.EntryKey, r.Name, r.LastError, r.Note = validText(r.EntryKey), validText(r.Name), validText(r.LastError), validText(r.Note)
	r.SecretState, r.State = SecretState(validText(string(r.SecretState))), State(validText(string(r.State)))
	if r.Groups != nil {
		groups := make([]string, len(r.Groups))
		for i, g := range r.Groups {
			groups[i] = validText(g)
		}
		r.Groups = groups
	}
	if r.MayTake != nil {
		names := make([]string, len(r.MayTake))
		for i, n := range r.MayTake {
			names[i] = validText(n)
		}
		r.MayTake = names
	}
	if r.Changes != nil {
		changes := make([]Change, len(r.Changes))
		for i, c := range r.Changes {
			changes[i] = Change{Op: validText(c.Op), Attr: validText(c.Attr)}
			if c.Values != nil {
				changes[i].Values = make([]string, len(c.Values))
				for k, v := range c.Values {
					changes[i].Values[k] = validText(v)
				}
			}
		}
		r.Changes = changes
	}
}

// A record's Commit is stored as what it changed, not as the whole record
// again: the value of the record's "a/" key (empty until then) holds the
// commit, and a record stored prepared ("r/") with a commit beside it
// reads as committed (mergeCommit). The record's later versions (its
// outcome, a retry) are written whole, in another state, and a commit left
// beside them is ignored. Each version of a record costs Badger its log,
// its memtable and its tables on every node of a cluster; a Commit used to
// write the whole record (about 200 bytes for a usual modify) to change
// its state, due time and entry key.
//
// Commit, format 1: the format byte, a flags byte (commitKey, commitName),
// the due time as at appendTime, then the entry key and the name, each
// only when its flag is set (set: the Commit replaced it).
const commitFormat1 byte = 1

const (
	commitKey byte = 1 << iota
	commitName
)

// encodeCommit returns what a Commit changed of prepared record old to
// make rec.
func encodeCommit(old, rec *Record) []byte {
	var flags byte
	if rec.EntryKey != old.EntryKey {
		flags |= commitKey
	}
	if rec.Name != old.Name {
		flags |= commitName
	}
	buf := make([]byte, 0, 24+len(rec.EntryKey)+len(rec.Name))
	buf = append(buf, commitFormat1, flags)
	buf = appendTime(buf, rec.NextAttempt)
	if flags&commitKey != 0 {
		buf = appendString(buf, rec.EntryKey)
	}
	if flags&commitName != 0 {
		buf = appendString(buf, rec.Name)
	}
	return buf
}

// mergeCommitValue makes prepared record r the committed record the
// commit v (encodeCommit) says.
func mergeCommitValue(r *Record, v []byte) error {
	if len(v) == 0 || v[0] != commitFormat1 {
		return fmt.Errorf("decode commit: unknown format")
	}
	d := decoder{s: string(v[1:])}
	flags := d.byte()
	at := d.time()
	var key, name string
	if flags&commitKey != 0 {
		key = d.string()
	}
	if flags&commitName != 0 {
		name = d.string()
	}
	if d.err == nil && (flags&^(commitKey|commitName) != 0 || d.off != len(d.s)) {
		d.err = errCorrupt
	}
	if d.err != nil {
		return fmt.Errorf("decode commit: %w", d.err)
	}
	r.State, r.NextAttempt = StateCommitted, at
	if flags&commitKey != 0 {
		r.EntryKey = key
	}
	if flags&commitName != 0 {
		r.Name = name
	}
	return nil
}
