package axigen

import (
	"context"
	"errors"
	"strings"

	"github.com/ldapgate/ldapgate/schema"
)

// AccountApply is one account of ApplyAccounts: the desired state and the
// name the entry had before a rename, as ApplyAccount takes them.
type AccountApply struct {
	Desired      schema.Account
	PreviousName string
	// Exists says the caller expects the account to exist already (its
	// entry was mirrored before), so that its reads may go in the same
	// exchange as its LIST: one round trip less. Should the LIST not find
	// it, those reads ran for nothing (reads only, refused with -ERR), the
	// session is dropped and the account applied again without the hint.
	Exists bool
}

// AccountResult is what ApplyAccounts did for one account: the plan it
// sent, or why the account was not applied (an error as ApplyAccount's).
type AccountResult struct {
	Plan *Plan
	Err  error
}

// ApplyAccounts is ApplyAccount for several accounts at once, on one
// session and in fewer round trips than one apply after the other: the
// LISTs of all of them go in one exchange, and each account's COMMIT goes
// with the reads of the next one. It returns one result per account, in
// their order.
//
// The server runs every command sent, whatever became of those before it
// (docs/axigen-cli.md, "Pipelining"), so a command that fails must leave
// the later ones of its exchange harmless. An exchange therefore holds
// writes (SET, DONE, COMMIT) of one account only, sent once the prompts
// showed that account's context; what follows a COMMIT in its exchange
// reads only (UPDATE Account, SHOW, CONFIG ContactInfo), so that a
// refused COMMIT can at worst make the next account's reads run in the
// refused account's context. Whenever an exchange goes wrong (a -ERR, a
// context other than the one expected) the session is dropped, which
// discards whatever it held unsaved, and the accounts not yet done are
// applied on a fresh session; the account that failed gets its error.
// Accounts that share a name (a rename's previous name) are applied after
// the others, one at a time; with Config.NoPipelining every account is.
func (c *Client) ApplyAccounts(ctx context.Context, domain string, reqs []AccountApply) []AccountResult {
	out := make([]AccountResult, len(reqs))
	var todo, alone []int
	seen := map[string]bool{}
	for i, r := range reqs {
		if err := checkAccount(r.Desired, r.PreviousName); err != nil {
			out[i].Err = withOp(err, applyOp(r.Desired.Name, domain))
			continue
		}
		names := []string{strings.ToLower(r.Desired.Name)}
		if r.PreviousName != "" {
			names = append(names, strings.ToLower(r.PreviousName))
		}
		if seen[names[0]] || len(names) > 1 && seen[names[1]] {
			alone = append(alone, i)
			continue
		}
		for _, n := range names {
			seen[n] = true
		}
		todo = append(todo, i)
	}
	if c.pool.cfg.NoPipelining || len(todo) == 0 || len(todo) == 1 && !speculable(reqs[todo[0]]) {
		alone, todo = append(todo, alone...), nil
	}
	if err := checkValue("domain", domain); err != nil || domain == "" {
		if err == nil {
			err = unsafeValue("domain", "empty name")
		}
		for _, i := range todo {
			out[i].Err = withOp(err, applyOp(reqs[i].Desired.Name, domain))
		}
		todo = nil
	}
	noHint := map[int]bool{} // accounts whose hint proved wrong
	for len(todo) > 0 {
		var rest []int
		err := c.pool.With(ctx, func(s *Session) error {
			if err := s.enterDomain(ctx, domain); err != nil {
				return err
			}
			rest = s.applyAccounts(ctx, c, domain, reqs, todo, out, noHint)
			return nil
		})
		if err != nil {
			// Nothing of this round was sent: the session could not be had
			// or the domain entered.
			for _, i := range todo {
				out[i].Err = withOp(err, applyOp(reqs[i].Desired.Name, domain))
			}
			break
		}
		todo = rest
	}
	for _, i := range alone {
		out[i].Plan, out[i].Err = c.ApplyAccount(ctx, domain, reqs[i].Desired, reqs[i].PreviousName)
	}
	return out
}

// speculable reports whether r's reads may go with its LIST (Exists).
func speculable(r AccountApply) bool {
	return r.Exists && len(accountNames(r)) == 1
}

func applyOp(name, domain string) string {
	return "apply account " + display(name) + "@" + display(domain)
}

// pending is what an account's apply left to send with the next account's
// reads: its COMMIT, or the BACKs that leave an account it did not change.
type pending struct {
	cmds   []Command
	expect []string
	owner  int // the account whose outcome the commands decide; -1: none
}

// applyAccounts applies the accounts todo (indices into reqs) on s, from
// the domain's context, and writes their results into out. It returns the
// accounts it did not get to: the session went wrong (and is dropped) and
// they are to be applied on a fresh one. It always settles one account's
// result, or (once) notes in noHint that the first one's Exists hint was
// wrong, so that a caller repeating it on what is returned comes to an
// end.
func (s *Session) applyAccounts(ctx context.Context, c *Client, domain string, reqs []AccountApply, todo []int, out []AccountResult, noHint map[int]bool) (rest []int) {
	fail := func(i int, err error) {
		out[i].Plan, out[i].Err = nil, withOp(err, applyOp(reqs[i].Desired.Name, domain))
	}
	// stop drops the session (its unsaved changes with it) and hands back
	// what was not done.
	stop := func(err error, from int) []int {
		s.fail(err)
		return todo[from:]
	}
	// One exchange lists every account (and the previous name of a
	// rename): LIST reads only, whatever the answers before it.
	var lists []Command
	var listExpect []string
	for _, i := range todo {
		for _, name := range accountNames(reqs[i]) {
			cmd, err := NewCommand(Keyword("LIST Accounts"), Value("account name", name))
			if err != nil { // checked by checkAccount
				fail(todo[0], err)
				return stop(err, 1)
			}
			lists, listExpect = append(lists, cmd), append(listExpect, ctxDomain)
		}
	}
	// The first account's reads go with the LISTs when it is expected to
	// exist: UPDATE, SHOW and CONFIG change nothing, wherever they run.
	first := todo[0]
	spec := speculable(reqs[first]) && !noHint[first]
	var firstReads []Command
	if spec {
		enter, err := NewCommand(Keyword("UPDATE Account name"), Value("account name", reqs[first].Desired.Name))
		if err != nil { // checked by checkAccount
			fail(first, err)
			return stop(err, 1)
		}
		firstReads = accountReads(enter)
	}
	ans, err := s.DoAll(ctx, append(append([]Command{}, lists...), firstReads...))
	var firstAns []*Response // the answers to firstReads
	firstErr := err
	if spec && len(ans) > len(lists) {
		ans, firstAns = ans[:len(lists)], ans[len(lists):]
	}
	if len(ans) == len(lists) {
		// Every LIST answered: they are judged by their answers alone,
		// whatever became of the first account's reads after them (a
		// wrong hint's refused reads may reach the server's maxErrors,
		// and it closes the session: the hint is then found wrong below,
		// not the account failed).
		err = nil
	}
	if err := unexpected(ans, lists, err, listExpect); err != nil {
		// A LIST refused: its account has the error; the connection lost:
		// the first one has. The others are listed again.
		at := 0
		for n, k := 0, 0; n < len(todo); n++ {
			names := len(accountNames(reqs[todo[n]]))
			if k+names <= len(ans) && unexpected(ans[k:k+names], lists[k:k+names], nil, listExpect[k:k+names]) != nil {
				at = n
				break
			}
			k += names
		}
		fail(todo[at], err)
		s.fail(err)
		return append(append([]int{}, todo[:at]...), todo[at+1:]...)
	}
	found := make([]string, len(todo)) // the account each one applies to, as Axigen spells it; "" to create
	k := 0
	for n, i := range todo {
		names := accountNames(reqs[i])
		for j, name := range names {
			if row, ok := findIn(ParseList(ans[k+j].Lines).Rows, name); ok && found[n] == "" {
				found[n] = row
			}
		}
		k += len(names)
	}

	// wrongHint ends a round whose first account was not as its hint said:
	// its reads ran for nothing; it goes again without the hint.
	wrongHint := func() []int {
		noHint[first] = true
		s.fail(errorf("account %q was not where expected", reqs[first].Desired.Name))
		return todo
	}
	if spec && found[0] == "" {
		return wrongHint()
	}

	tail := pending{owner: -1}
	// flushTail sends what the previous account left, alone; false when the
	// session went wrong.
	flushTail := func() bool {
		if len(tail.cmds) == 0 {
			return true
		}
		ans, err := s.DoAll(ctx, tail.cmds)
		err = unexpected(ans, tail.cmds, err, tail.expect)
		if err != nil && tail.owner >= 0 {
			fail(tail.owner, err)
		}
		tail = pending{owner: -1}
		if err != nil {
			s.fail(err)
			return false
		}
		return true
	}
	for n, i := range todo {
		r := reqs[i]
		if found[n] == "" {
			// A new account: created as ApplyAccount does, once the
			// previous account's COMMIT is through.
			if !flushTail() {
				return todo[n:]
			}
			plan, err := c.planAccount(domain, r.Desired, AccountState{}, false)
			if err == nil {
				err = s.run(ctx, plan)
			}
			if err != nil {
				fail(i, err)
				return stop(err, n+1)
			}
			out[i].Plan = plan
			continue
		}
		enter, err := NewCommand(Keyword("UPDATE Account name"), Value("account name", found[n]))
		if err != nil {
			// The row cannot be sent back (the server spells it with what
			// a value may not hold): this account fails alone, and the
			// previous one's COMMIT, which was to go with its reads, goes
			// now, or that account would be reported applied unsaved.
			fail(i, err)
			if n == 0 && spec {
				// Its reads went with the LISTs: the session is where
				// they left it.
				return stop(err, 1)
			}
			if !flushTail() {
				return todo[n+1:]
			}
			continue
		}
		reads := accountReads(enter)
		readExpect := []string{ctxAccount, ctxAccount, ctxContact, ctxContact}
		var ans []*Response
		if n == 0 && spec {
			ans, err = firstAns, firstErr
		} else {
			cmds := append(append([]Command{}, tail.cmds...), reads...)
			ans, err = s.DoAll(ctx, cmds)
		}
		if len(tail.cmds) > 0 {
			terr := tailError(ans, tail, err)
			if terr == nil && err != nil && KindOf(err) != KindServer {
				// The previous account's commands all answered as
				// expected (its COMMIT ran: it is applied), then the
				// session broke on this one's reads: this one is redone
				// on a fresh session.
				s.fail(err)
				return todo[n:]
			}
			if terr != nil {
				// The previous account's COMMIT failed, or its answer was
				// lost: that account has the error; this one's reads ran
				// wherever the failure left the session, and are redone.
				if tail.owner >= 0 {
					fail(tail.owner, terr)
					return stop(terr, n)
				}
				s.fail(terr)
				return todo[n:]
			}
			ans = ans[len(tail.cmds):]
		}
		tail = pending{owner: -1}
		if err := unexpected(ans, reads, err, readExpect); err != nil {
			if n == 0 && spec && found[0] != r.Desired.Name && KindOf(err) != KindConnection && KindOf(err) != KindTimeout {
				// Spelt otherwise: its reads asked for the wrong spelling.
				return wrongHint()
			}
			fail(i, err)
			return stop(err, n+1)
		}
		cur := accountFromReads(found[n], ans)
		leave := pending{cmds: []Command{cmdBack, cmdBack}, expect: []string{ctxAccount, ctxDomain}, owner: -1}
		if associated(cur.LDAPID) && associated(r.Desired.LDAPID) && !strings.EqualFold(cur.LDAPID, r.Desired.LDAPID) {
			fail(i, &Error{Kind: KindConflict, Err: errorf("account %q is associated with LDAP ID %q, not %q", cur.Name, cur.LDAPID, r.Desired.LDAPID)})
			tail = leave
			continue
		}
		plan, err := c.planAccount(domain, r.Desired, cur, true)
		if err != nil {
			fail(i, err)
			tail = leave
			continue
		}
		out[i].Plan = plan
		if plan.Empty() {
			tail = leave
			continue
		}
		// As applyInContact: the plan's opening UPDATE (and CONFIG
		// ContactInfo) are where the session is already; everything up to
		// the COMMIT goes now, the COMMIT with the next account's reads.
		body, expect := plan.Commands[1:len(plan.Commands)-1], plan.expect[1:len(plan.expect)-1]
		if len(body) > 0 && body[0].line == cmdConfigContact.line {
			body, expect = body[1:], expect[1:]
		} else {
			body = append([]Command{cmdBack}, body...)
			expect = append([]string{ctxAccount}, expect...)
		}
		if err := s.runGrouped(ctx, body, expect); err != nil {
			fail(i, err)
			return stop(err, n+1)
		}
		tail = pending{cmds: []Command{cmdCommit}, expect: []string{ctxDomain}, owner: i}
	}
	flushTail() // a failure settles the owner's result; nothing is left
	return nil
}

// tailError is unexpected for the commands a pending left, sent first in
// an exchange whose answers (and DoAll's error) are ans and err: when all
// of theirs came, they are judged by them alone, whatever became of the
// later commands of the exchange.
func tailError(ans []*Response, tail pending, err error) error {
	if len(ans) >= len(tail.cmds) {
		return unexpected(ans[:len(tail.cmds)], tail.cmds, nil, tail.expect)
	}
	return unexpected(ans, tail.cmds, err, tail.expect)
}

// accountReads are an account's reads from the domain's context, ending
// in its contact info, where its plan goes on (as readAccountIn's).
func accountReads(enter Command) []Command {
	return []Command{enter, mustKeywords("SHOW RegistryInformation"), cmdConfigContact, cmdShow}
}

// accountFromReads is the state of account name from the answers to its
// accountReads, in their order: its LDAP association from the registry
// information, its contact fields (those set) from the contact info.
func accountFromReads(name string, ans []*Response) AccountState {
	st := AccountState{Name: name, Contact: map[string]string{}}
	fields := ParseShow(ans[1].Lines)
	st.LDAPID, _ = showValue(fields, "Associated LDAP ID")
	st.DN, _ = showValue(fields, "Associated LDAP DN")
	for _, f := range ParseShow(ans[3].Lines) {
		if f.Value != "" {
			st.Contact[f.Name] = f.Value
		}
	}
	return st
}

// accountNames are the names an apply looks for: the desired one, then
// the previous one of a rename.
func accountNames(r AccountApply) []string {
	if r.PreviousName != "" && !strings.EqualFold(r.PreviousName, r.Desired.Name) {
		return []string{r.Desired.Name, r.PreviousName}
	}
	return []string{r.Desired.Name}
}

// unexpected checks the answers to cmds, sent in one exchange (DoAll's
// answers and error): every one must have come, be +OK and, when expect is
// set, lead to the context expected. It returns the first thing that is
// not so (nil: all is well): DoAll's error when the session broke, else
// the first -ERR, else a protocol error naming the context.
func unexpected(ans []*Response, cmds []Command, err error, expect []string) error {
	var e *Error
	if err != nil && !(errors.As(err, &e) && e.Kind == KindServer) {
		return err
	}
	for i, a := range ans {
		if i >= len(cmds) {
			break
		}
		if !a.OK {
			return &Error{Kind: KindServer, Cmd: cmds[i].masked, Status: a.Status}
		}
		if expect != nil && !strings.EqualFold(a.Context, expect[i]) {
			return &Error{Kind: KindProtocol, Cmd: cmds[i].masked,
				Err: errorf("context %q after the command where %q was expected", a.Context, expect[i])}
		}
	}
	if len(ans) < len(cmds) {
		return &Error{Kind: KindProtocol, Cmd: cmds[len(ans)].masked, Err: errorf("no answer")}
	}
	return nil
}
