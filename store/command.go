package store

import (
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"time"
)

// A replicated journal (Options.Replicated) is the state machine of a Raft
// cluster: it changes only by applying batches of Commands in the order of
// the Raft log (Journal.Apply). A Command carries everything a node needs
// to make the same change as every other node: what the proposer (the
// leader) chose — the sequence number of a new record, the time, the
// sealed secret, the term of a delivery — travels in the command, and
// applying it reads only the journal's own state. A command that does not
// fit the state (a Commit of a record no longer prepared) is refused the
// same way on every node and changes nothing.

// CommandOp says what a Command does.
type CommandOp uint8

// Command operations. The values are stored in the Raft log: never reuse
// or renumber one.
const (
	// CmdPrepare journals Record (state prepared) under Seq, which must be
	// above every sequence number applied before; Sealed is its sealed
	// secret, if any. A Prepare whose Record.Token was aborted before it
	// (CmdAbortToken) is refused (ErrAborted).
	CmdPrepare CommandOp = 1
	// CmdCommit commits prepared record Seq; EntryKey, when set, becomes
	// its stable key, and Name its name when it has none. Time is when it
	// becomes due.
	CmdCommit CommandOp = 2
	// CmdAbort removes prepared record Seq.
	CmdAbort CommandOp = 3
	// CmdOutcome records a delivery of committed record Seq by the leader
	// of term Term (see Outcome).
	CmdOutcome CommandOp = 4
	// CmdRetry makes dead (or committed) record Seq due at Time.
	CmdRetry CommandOp = 5
	// CmdDrop removes record Seq unless it is delivered.
	CmdDrop CommandOp = 6
	// CmdPurge removes the records Seqs that were delivered before Time.
	CmdPurge CommandOp = 7
	// CmdPutDisabled records Disabled in the disabled-accounts table.
	CmdPutDisabled CommandOp = 8
	// CmdRemoveDisabled forgets the disabled account Name.
	CmdRemoveDisabled CommandOp = 9
	// CmdFence raises the journal's delivery term to Term: outcomes of
	// deliveries made under an older term are refused from then on. A new
	// leader proposes it before it delivers.
	CmdFence CommandOp = 10
	// CmdAbortToken aborts the prepared record whose Prepare carried
	// Token, or, when none is prepared, tombstones Token so that its
	// Prepare is refused if it comes later (see PrepareToken). Time
	// dates the tombstone.
	CmdAbortToken CommandOp = 11
)

func (op CommandOp) String() string {
	switch op {
	case CmdPrepare:
		return "prepare"
	case CmdCommit:
		return "commit"
	case CmdAbort:
		return "abort"
	case CmdOutcome:
		return "outcome"
	case CmdRetry:
		return "retry"
	case CmdDrop:
		return "drop"
	case CmdPurge:
		return "purge"
	case CmdPutDisabled:
		return "put-disabled"
	case CmdRemoveDisabled:
		return "remove-disabled"
	case CmdFence:
		return "fence"
	case CmdAbortToken:
		return "abort-token"
	}
	return fmt.Sprintf("command(%d)", uint8(op))
}

// Command is one change of a replicated journal. Which fields count
// depends on Op (see the CommandOp constants).
type Command struct {
	Op  CommandOp
	Seq uint64
	// Time is the proposer's clock: a new record's time (when Record.Time
	// is zero), when a commit or retry becomes due, a delivery's time, a
	// purge's cutoff.
	Time time.Time
	// Record is a Prepare's record. Before Stamp, Record.Secret holds the
	// plaintext password; Stamp seals it into Sealed and clears it. The
	// plaintext is never encoded.
	Record *Record
	// Sealed is a Prepare's sealed secret (see Journal.Stamp).
	Sealed   []byte
	EntryKey string
	// Term is the delivering leader's term (Outcome) or the new delivery
	// term (Fence).
	Term    uint64
	Outcome Outcome
	// Seqs are a Purge's records.
	Seqs     []uint64
	Disabled DisabledAccount // PutDisabled
	Name     string          // RemoveDisabled
	Token    PrepareToken    // AbortToken
}

// Outcome is what a delivery came to, as the leader decided it.
type Outcome struct {
	// Delivered: Axigen has the record; Covered lists the committed
	// records the same delivery brought along (see Coverer).
	Delivered bool
	Covered   []uint64
	// A failure: LastError (secret-free), and either Dead or the time of
	// the next attempt. A delivery that skipped something (Incomplete)
	// is Delivered with LastError saying what.
	LastError   string
	Dead        bool
	NextAttempt time.Time
	// Postponed: the failure is a delivery put off (Postpone), which does
	// not count as an attempt. A node of an earlier version ignores the
	// flag and counts it (the count only informs operators: the leader
	// decides Dead).
	Postponed bool
}

// MaxEntryBytes bounds the commands of one Raft log entry (the sum of
// their SizeHint): an entry is applied in one Badger transaction, which
// must stay well inside Badger's limit (see softBatchBytes). Apply refuses
// every command of a larger entry (ErrTooLarge); a proposer keeps its
// entries below it.
const MaxEntryBytes = 512 << 10

// SizeHint is about the size of the command's encoding: at least that
// for a record with no unusually large numbers, and before Stamp it
// counts the plaintext secret for the sealed one.
func (c *Command) SizeHint() int {
	n := 64 + len(c.Sealed) + len(c.EntryKey) + len(c.Outcome.LastError) + 10*len(c.Seqs) + 10*len(c.Outcome.Covered) +
		len(c.Name) + len(c.Disabled.Name) + len(c.Disabled.EntryKey) + len(c.Disabled.DN) + len(c.Disabled.Reason)
	if c.Record != nil {
		n += c.Record.encodedSizeHint() + len(c.Record.Secret) + 32
	}
	if !c.Token.IsZero() {
		n += 1 + len(c.Token)
	}
	return n
}

// Errors of applying commands.
var (
	// ErrReplicated: the journal changes only through the cluster.
	ErrReplicated = errors.New("journal is replicated: its changes go through the cluster")
	// ErrStaleTerm: an outcome from a leader whose term has been fenced off.
	ErrStaleTerm = errors.New("delivery outcome from an older term")
	// ErrSeq: a Prepare whose sequence number does not follow the journal's.
	ErrSeq = errors.New("sequence number does not follow the journal's last one")
)

// Command batch, format 1: the format byte, the number of commands, then
// each command: its op byte and every field in declaration order (numbers
// as varints, strings and byte strings with their length, times as in
// appendTime, the record as a length and appendRecord's encoding, 0 for
// none, the outcome's flags as a byte). Every field is written for every
// op: a batch's size is dominated by its records, and one layout is one
// decoder to get right.
//
// Format 2 is format 1 with one more field after each command's: its
// Token, as a string (empty for none). A batch is written in format 2 only
// when one of its commands has a token (an AbortToken; a Prepare's token
// travels in its record), so the batches of the write path keep format 1,
// and entries written before tokens read as they were.
const (
	commandFormat1 byte = 1
	commandFormat2 byte = 2
)

const (
	outcomeDelivered byte = 1 << iota
	outcomeDead
	outcomePostponed
)

// EncodeCommands encodes a batch of commands for the Raft log. A command's
// plaintext secret (Record.Secret) is never encoded: Stamp seals it first.
func EncodeCommands(cmds []Command) []byte {
	size := 8
	for i := range cmds {
		size += cmds[i].SizeHint()
	}
	format := commandFormat1
	for i := range cmds {
		if !cmds[i].Token.IsZero() {
			format = commandFormat2
			break
		}
	}
	buf := make([]byte, 0, size)
	buf = append(buf, format)
	buf = binary.AppendUvarint(buf, uint64(len(cmds)))
	var scratch []byte // a record's encoding, before its length
	for i := range cmds {
		buf, scratch = appendCommand(buf, scratch, &cmds[i])
		if format == commandFormat2 {
			var tok string
			if !cmds[i].Token.IsZero() {
				tok = string(cmds[i].Token[:])
			}
			buf = appendString(buf, tok)
		}
	}
	return buf
}

// appendCommand appends c, using scratch for its record's encoding, and
// returns scratch for the next command.
func appendCommand(buf, scratch []byte, c *Command) ([]byte, []byte) {
	buf = append(buf, byte(c.Op))
	buf = binary.AppendUvarint(buf, c.Seq)
	buf = appendTime(buf, c.Time)
	if c.Record == nil {
		buf = append(buf, 0)
	} else {
		scratch = appendRecord(scratch[:0], c.Record)
		buf = binary.AppendUvarint(buf, uint64(len(scratch)))
		buf = append(buf, scratch...)
	}
	buf = appendString(buf, string(c.Sealed))
	buf = appendString(buf, c.EntryKey)
	buf = binary.AppendUvarint(buf, c.Term)
	var flags byte
	if c.Outcome.Delivered {
		flags |= outcomeDelivered
	}
	if c.Outcome.Dead {
		flags |= outcomeDead
	}
	if c.Outcome.Postponed {
		flags |= outcomePostponed
	}
	buf = append(buf, flags)
	buf = appendNums(buf, c.Outcome.Covered)
	buf = appendString(buf, c.Outcome.LastError)
	buf = appendTime(buf, c.Outcome.NextAttempt)
	buf = appendNums(buf, c.Seqs)
	d := c.Disabled
	buf = appendString(buf, d.Name)
	buf = appendString(buf, d.EntryKey)
	buf = appendString(buf, d.DN)
	buf = appendString(buf, d.Reason)
	buf = appendTime(buf, d.Since)
	buf = binary.AppendUvarint(buf, d.Seq)
	buf = appendTime(buf, d.GraceFrom)
	scrambled := byte(0)
	if d.Scrambled {
		scrambled = 1
	}
	buf = append(buf, scrambled)
	buf = binary.AppendUvarint(buf, d.RemovalSeq)
	return appendString(buf, c.Name), scratch
}

func appendNums(buf []byte, ns []uint64) []byte {
	buf = binary.AppendUvarint(buf, uint64(len(ns)))
	for _, n := range ns {
		buf = binary.AppendUvarint(buf, n)
	}
	return buf
}

// DecodeCommands reads a batch written by EncodeCommands.
func DecodeCommands(b []byte) ([]Command, error) { return AppendDecodedCommands(nil, b) }

// AppendDecodedCommands is DecodeCommands appending to dst, so that a
// caller that decodes entry after entry (a node's state machine) reuses
// one slice's storage; dst is returned as it was on an error.
func AppendDecodedCommands(dst []Command, b []byte) ([]Command, error) {
	if len(b) == 0 || (b[0] != commandFormat1 && b[0] != commandFormat2) {
		return dst, errors.New("decode commands: unknown format")
	}
	d := decoder{s: string(b[1:])}
	n := d.count()
	all := slices.Grow(dst, n)[:len(dst)+n]
	cmds := all[len(dst):]
	clear(cmds)
	for i := range cmds {
		d.command(&cmds[i])
		if b[0] == commandFormat2 {
			switch t := d.string(); len(t) {
			case 0:
			case len(cmds[i].Token):
				copy(cmds[i].Token[:], t)
			default:
				d.fail()
			}
		}
	}
	if d.err != nil {
		return dst, fmt.Errorf("decode commands: %w", d.err)
	}
	if d.off != len(d.s) {
		return dst, fmt.Errorf("decode commands: %d bytes left over: %w", len(d.s)-d.off, errCorrupt)
	}
	return all, nil
}

func (d *decoder) command(c *Command) {
	c.Op = CommandOp(d.byte())
	c.Seq = d.uvarint()
	c.Time = d.time()
	if n := d.count(); n > 0 {
		sub := decoder{s: d.s[d.off : d.off+n]}
		d.off += n
		if sub.byte() != recordFormat1 {
			d.fail()
			return
		}
		c.Record = sub.record()
		if sub.err != nil || sub.off != len(sub.s) {
			d.fail()
			return
		}
	}
	if s := d.string(); s != "" {
		c.Sealed = []byte(s)
	}
	c.EntryKey = d.string()
	c.Term = d.uvarint()
	flags := d.byte()
	c.Outcome.Delivered = flags&outcomeDelivered != 0
	c.Outcome.Dead = flags&outcomeDead != 0
	c.Outcome.Postponed = flags&outcomePostponed != 0
	c.Outcome.Covered = d.nums()
	c.Outcome.LastError = d.string()
	c.Outcome.NextAttempt = d.time()
	c.Seqs = d.nums()
	c.Disabled.Name = d.string()
	c.Disabled.EntryKey = d.string()
	c.Disabled.DN = d.string()
	c.Disabled.Reason = d.string()
	c.Disabled.Since = d.time()
	c.Disabled.Seq = d.uvarint()
	c.Disabled.GraceFrom = d.time()
	c.Disabled.Scrambled = d.byte() != 0
	c.Disabled.RemovalSeq = d.uvarint()
	c.Name = d.string()
}

// nums reads a list of numbers (nil when empty).
func (d *decoder) nums() []uint64 {
	n := d.count()
	if n == 0 {
		return nil
	}
	ns := make([]uint64, n)
	for i := range ns {
		ns[i] = d.uvarint()
	}
	return ns
}
