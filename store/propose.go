package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
)

// A replicated journal takes its changes from the cluster (Apply), so its
// own writers — the gateway's Prepare, Commit..., the admin's Retry and
// Drop, the deliverer's outcomes and purges — go through a Proposer: the
// cluster node, which has the leader stamp the commands, put them in the
// Raft log and every node apply them. The caller sees the same API as on
// a journal of its own.

// Applied is what became of one proposed command.
type Applied struct {
	// Seq is the command's record: for a Prepare, the sequence number the
	// leader gave it.
	Seq uint64
	// Err is why the journal refused the command (nil: applied), the same
	// on every node: a Commit of a record no longer prepared (ErrState), an
	// outcome of a fenced-off term (ErrStaleTerm)... A node that forwards
	// proposals carries it as RefusalCode and its text, and rebuilds it
	// with RefusalError, so that errors.Is holds on the proposing node.
	Err error
}

// A Proposer has the cluster apply commands to every node's journal, in
// order, and returns what became of each once this node's journal has
// applied them (a follower forwards them to the leader and waits until
// it has applied the leader's entry too, so that the caller reads its own
// change). A Prepare's Record.Secret holds the plaintext: only the node
// that stamps the command (Journal.Stamp) seals it, and it must travel
// nowhere else than inside the cluster's authenticated, encrypted
// connections.
//
// Its error is the proposal's failure, none of its commands applied (or
// their fate unknown, when ctx ended after the proposal was sent). A
// proposer wraps ErrUnavailable in the error when the cluster cannot
// take changes now: no quorum, no leader known, leadership lost before a
// quorum stored the entry. Callers answer those with "unavailable"
// rather than as a failure of the journal. It wraps ErrOutcomeUnknown
// when the commands may still be applied (sent, but the answer was
// lost): a Prepare's proposer then aborts it by its token (AbortToken).
type Proposer interface {
	Propose(ctx context.Context, cmds []Command) ([]Applied, error)
}

// ErrUnavailable says the cluster cannot take changes now (see Proposer).
var ErrUnavailable = errors.New("journal: the cluster cannot take changes now (no quorum or no leader)")

// proposerRef boxes a Proposer for an atomic pointer.
type proposerRef struct{ p Proposer }

// SetProposer makes a replicated journal's Prepare, Commit, Abort, Retry,
// Drop, PutDisabled and RemoveDisabled go through p, and lets it deliver
// (RunTerm). Set it before the journal takes writes; nil takes it away
// (those methods then return ErrReplicated again). A journal of its own
// changes itself and ignores it.
func (j *Journal) SetProposer(p Proposer) {
	if p == nil {
		j.prop.Store(nil)
		return
	}
	j.prop.Store(&proposerRef{p: p})
}

// proposer is the journal's Proposer (nil: none, or a journal of its own).
func (j *Journal) proposer() Proposer {
	if !j.opts.Replicated {
		return nil
	}
	if r := j.prop.Load(); r != nil {
		return r.p
	}
	return nil
}

// proposeOne proposes one command and returns what became of it.
func proposeOne(ctx context.Context, p Proposer, c Command) (Applied, error) {
	res, err := p.Propose(ctx, []Command{c})
	if err != nil {
		return Applied{}, err
	}
	if len(res) != 1 {
		return Applied{}, fmt.Errorf("the proposer answered %d results for one command", len(res))
	}
	return res[0], nil
}

// proposeChange proposes a change of record seq (or of the disabled
// table); what names the change in a failure's error. A refusal is
// returned as it is: it names the command and its record already.
func (j *Journal) proposeChange(ctx context.Context, p Proposer, what string, c Command) error {
	a, err := proposeOne(ctx, p, c)
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	return a.Err
}

// proposePrepare is Prepare on a replicated journal. The record carries
// a new token; a failure whose outcome is unknown is an
// *UnknownPrepareError with it, for the caller to abort the record
// (AbortToken) in case it is in the log.
func (j *Journal) proposePrepare(ctx context.Context, p Proposer, r *Record) (uint64, error) {
	// A copy: a proposal whose ctx ends may still be stamped later, and the
	// caller may clear its secret as soon as Prepare returns.
	rec := r.clone()
	rec.Secret = bytes.Clone(r.Secret)
	tok, err := NewPrepareToken()
	if err != nil {
		return 0, fmt.Errorf("prepare %s of %s: %w", r.Op, r.DN, err)
	}
	rec.Token = tok
	a, err := proposeOne(ctx, p, Command{Op: CmdPrepare, Record: rec})
	if err != nil && errors.Is(err, ErrOutcomeUnknown) {
		return 0, &UnknownPrepareError{Token: tok, Err: fmt.Errorf("prepare %s of %s: %w", r.Op, r.DN, err)}
	}
	if err == nil {
		err = a.Err
	}
	if err != nil {
		return 0, fmt.Errorf("prepare %s of %s: %w", r.Op, r.DN, err)
	}
	clear(rec.Secret) // stamped (sealed) by now
	return a.Seq, nil
}

// AbortToken aborts the record a replicated Prepare journaled with token
// tok, if it is prepared, or makes sure that Prepare is refused if it is
// applied later (CmdAbortToken). It is for a Prepare whose outcome is
// unknown (UnknownPrepareError): made again after an unknown outcome of
// its own, it changes nothing more. A journal of its own knows its
// outcomes and gives no tokens: it refuses.
func (j *Journal) AbortToken(ctx context.Context, tok PrepareToken) error {
	p := j.proposer()
	if p == nil {
		return fmt.Errorf("abort by token %s: the journal is not a cluster's, or has no proposer", tok)
	}
	return j.proposeChange(ctx, p, "abort by token "+tok.String(), Command{Op: CmdAbortToken, Token: tok})
}

// RefusalCode names the well-known error err wraps, for a node that
// forwards a proposal to send back with err's text ("" when err wraps
// none of them; RefusalError rebuilds the error).
func RefusalCode(err error) string {
	if err == nil {
		return ""
	}
	for _, r := range refusals {
		if errors.Is(err, r.err) {
			return r.code
		}
	}
	return ""
}

// RefusalError rebuilds an error sent as RefusalCode and text: its text
// is msg, and errors.Is matches the well-known error code names (none
// for an unknown or empty code).
func RefusalError(code, msg string) error {
	for _, r := range refusals {
		if r.code == code {
			if msg == "" {
				msg = r.err.Error()
			}
			return &refusal{msg: msg, err: r.err}
		}
	}
	return errors.New(msg)
}

// refusals are the errors RefusalCode names, most telling first. The
// codes go over the network: never change one. Read only.
var refusals = [...]struct {
	code string
	err  error
}{
	{"unavailable", ErrUnavailable},
	{"stale-term", ErrStaleTerm},
	{"not-found", ErrNotFound},
	{"state", ErrState},
	{"in-flight", ErrInFlight},
	{"too-large", ErrTooLarge},
	{"seq", ErrSeq},
	{"no-key", ErrNoKey},
	{"wrong-key", ErrWrongKey},
	{"replicated", ErrReplicated},
	{"closed", ErrClosed},
	{"aborted", ErrAborted},
	{"outcome-unknown", ErrOutcomeUnknown},
	{"canceled", context.Canceled},
	{"deadline", context.DeadlineExceeded},
}

// refusal is an error rebuilt from its code and text.
type refusal struct {
	msg string
	err error
}

func (e *refusal) Error() string { return e.msg }
func (e *refusal) Unwrap() error { return e.err }

// RunTerm delivers the committed records of a replicated journal, as the
// cluster's leader of term term, until ctx is done (it then returns nil):
// the scheduling is Run's, and each outcome is proposed (CmdOutcome with
// term), so that every node records it. A record's next delivery waits
// until the proposal of its outcome has returned. An outcome the journal
// refuses — the record settled meanwhile, or the term fenced off by a
// newer leader — is logged; the latter ends the run with an error
// wrapping ErrStaleTerm, since this node no longer delivers. While it
// runs, housekeeping on this node proposes the purges (CmdPurge) of the
// delivered records past Retention. It needs a Proposer (SetProposer).
func (j *Journal) RunTerm(ctx context.Context, term uint64, workers int, d Deliverer) error {
	if !j.opts.Replicated {
		return errors.New("run term: the journal is not replicated (it delivers with Run)")
	}
	p := j.proposer()
	if p == nil {
		return fmt.Errorf("run term %d: no proposer: %w", term, ErrReplicated)
	}
	if cur := j.DeliveryTerm(); term < cur {
		return fmt.Errorf("run term %d: the journal is fenced to term %d: %w", term, cur, ErrStaleTerm)
	}
	t := &termRun{term: term, p: p, stopped: make(chan struct{})}
	return j.sched.deliverLoop(ctx, workers, d, t, j.sched.proposeOutcome(ctx, t))
}

// termRun is a replicated journal's delivery in one term (RunTerm).
type termRun struct {
	term    uint64
	p       Proposer
	stopped chan struct{} // closed when the term is found over
	once    sync.Once
	stale   error // why, set before stopped is closed
}

// stop ends the run: err says why.
func (t *termRun) stop(err error) {
	t.once.Do(func() {
		t.stale = err
		close(t.stopped)
	})
}

// err is why the run stopped; only once stopped is closed.
func (t *termRun) err() error { return t.stale }

// outcomeTimeout bounds the proposal of a delivery's outcome. It is not
// cut short when the run ends: a delivery made must be recorded, or it is
// made again.
const outcomeTimeout = 30 * time.Second

// proposeOutcome records the outcomes of term run t through its
// proposer; the delivery is released once the proposal has returned, by
// when this node's journal has applied the outcome and its index holds
// the record's new version.
func (s *scheduler) proposeOutcome(ctx context.Context, t *termRun) recordFunc {
	return func(d dispatched, rec *Record, derr error, covered []uint64, secret []byte) error {
		o := s.outcome(derr, covered, rec.Attempts, secret, s.opts.Now())
		pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), outcomeTimeout)
		a, err := proposeOne(pctx, t.p, Command{Op: CmdOutcome, Seq: d.seq, Term: t.term, Outcome: o})
		cancel()
		if err != nil {
			return fmt.Errorf("outcome of record %d in term %d: %w", d.seq, t.term, err)
		}
		if a.Err != nil {
			s.log.Info("delivery outcome refused", "seq", d.seq, "term", t.term, "err", a.Err)
			if errors.Is(a.Err, ErrStaleTerm) {
				t.stop(fmt.Errorf("delivery in term %d: a newer leader fenced it off: %w", t.term, ErrStaleTerm))
			}
		}
		s.releaseDelivery(d, time.Time{})
		return nil
	}
}

// delivering is the proposer of the replicated delivery running on this
// node (nil: none).
func (s *scheduler) delivering() Proposer {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.term == nil {
		return nil
	}
	return s.term.p
}
