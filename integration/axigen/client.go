// Package axigen drives Axigen's administration CLI (see
// docs/axigen-cli.md): dialling and logging in, prompt-driven
// context tracking, status lines, SHOW and LIST parsing, quoting of every
// value, and a pool of sessions that reconnect. On top of it, Client reads
// an account's or group's state and applies a desired state idempotently:
// it reads what Axigen holds, computes the difference, and sends only the
// commands that close it. Error texts of the CLI are undocumented, so the
// client never branches on them: every decision is made from state read
// with LIST and SHOW.
package axigen

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"slices"
	"strings"
	"time"
	"unicode"

	"github.com/ldapgate/ldapgate/schema"
)

// AccountState is an account as Axigen shows it through the CLI. Axigen
// never shows a password, and the CLI document names no command for the
// enabled flag, so neither is here.
type AccountState struct {
	Name string
	// LDAPID and DN are "Associated LDAP ID" and "Associated LDAP DN".
	LDAPID string
	DN     string
	// Contact holds the contact-info fields that are not empty.
	Contact map[string]string
}

// GroupState is a group as Axigen shows it through the CLI.
type GroupState struct {
	Name string
	// Members are the member addresses, sorted.
	Members []string
}

// Plan is what an apply sends, or would send, to close the difference
// between Axigen and a desired state. Commands run in the domain's context
// (entered with "UPDATE Domain name <Domain>" while reading the state, or
// already current: see Pool) and end back in it, each object saved by the
// COMMIT that leaves its own context. An empty plan means Axigen already
// holds the desired state.
type Plan struct {
	Domain string
	// Object says what the plan is about, e.g. `account "john"`.
	Object   string
	Commands []Command

	expect []string // the context each command must lead to
}

// Empty reports whether there is nothing to change.
func (p *Plan) Empty() bool { return len(p.Commands) == 0 }

// Lines returns the commands with passwords masked, for display.
func (p *Plan) Lines() []string {
	out := make([]string, len(p.Commands))
	for i, c := range p.Commands {
		out[i] = c.String()
	}
	return out
}

func (p *Plan) add(cmd Command, expect string) {
	p.Commands = append(p.Commands, cmd)
	p.expect = append(p.expect, expect)
}

// The contexts the client expects, as prompts show them (without '#').
const (
	ctxRoot    = ""
	ctxDomain  = "domain"
	ctxAccount = "domain-account"
	ctxContact = "domain-account-contactInfo"
	ctxGroup   = "domain-group"
	ctxLimits  = "domain-account-limits"
)

var (
	cmdBack   = mustKeywords("BACK")
	cmdCommit = mustKeywords("COMMIT")
	cmdDone   = mustKeywords("DONE")
	cmdShow   = mustKeywords("SHOW")
	// cmdConfigContact enters an account's contact info context.
	cmdConfigContact = mustKeywords("CONFIG ContactInfo")
	cmdConfigLimits  = mustKeywords("CONFIG Limits")
	// The empty set of services: no login, no delivery (docs/axigen-cli.md).
	cmdDisableServices = mustKeywords("SET services ()")
	cmdResetServices   = mustKeywords("RESET services")
)

// Client applies desired states through a Pool.
type Client struct {
	pool        *Pool
	newPassword func() (string, error)
}

// Option configures a Client.
type Option func(*Client)

// WithPasswordGenerator sets how the client makes the password of an
// account it must create when the desired state carries none (Axigen
// requires one; users then authenticate through the directory). The
// default makes 32 random characters.
func WithPasswordGenerator(f func() (string, error)) Option {
	return func(c *Client) { c.newPassword = f }
}

// NewClient returns a Client that uses pool's sessions.
func NewClient(pool *Pool, opts ...Option) *Client {
	c := &Client{pool: pool, newPassword: randomPassword}
	for _, o := range opts {
		o(c)
	}
	return c
}

func randomPassword() (string, error) {
	b := make([]byte, 24)
	if _, err := rand.Read(b); err != nil {
		return "", errorf("random password: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}

// step runs cmd and checks that the prompt shows the expected context.
func (s *Session) step(ctx context.Context, cmd Command, expect string) (*Response, error) {
	ans, err := s.steps(ctx, []Command{cmd}, []string{expect})
	if len(ans) == 0 {
		return nil, err
	}
	return ans[0], err
}

// steps runs cmds in one round trip (Session.DoAll) and checks that each
// prompt shows the context expected after its command. A "-ERR" answer is
// the error, as for step; the later commands ran all the same.
func (s *Session) steps(ctx context.Context, cmds []Command, expect []string) ([]*Response, error) {
	ans, err := s.DoAll(ctx, cmds)
	if err != nil {
		return ans, err
	}
	for i, a := range ans {
		if !strings.EqualFold(a.Context, expect[i]) {
			return ans, s.fail(&Error{Kind: KindProtocol, Cmd: cmds[i].masked,
				Err: errorf("context %q after the command where %q was expected", a.Context, expect[i])})
		}
	}
	return ans, nil
}

// runGrouped runs commands, each leading to the context in expect, in as
// few round trips as is safe: commands that stay in the context they run
// in go together with the next one, which may change it (a failed SET
// leaves the later SETs and the DONE harmless: nothing is written before
// COMMIT, and a failed operation's session is backed out with BACK); a
// command that changes the context ends a round trip, since the next ones
// would run elsewhere if it failed; COMMIT, which writes, goes alone, only
// after everything before it succeeded.
func (s *Session) runGrouped(ctx context.Context, cmds []Command, expect []string) error {
	for i := 0; i < len(cmds); {
		j, cur := i, s.Context()
		for j < len(cmds) {
			if cmds[j].line == cmdCommit.line && j > i {
				break
			}
			j++
			if cmds[j-1].line == cmdCommit.line || !strings.EqualFold(expect[j-1], cur) {
				break
			}
		}
		if _, err := s.steps(ctx, cmds[i:j], expect[i:j]); err != nil {
			return err
		}
		i = j
	}
	return nil
}

// enterDomain brings the session into domain's context: a session the pool
// parked there is already in it, one parked in another domain leaves that
// first.
func (s *Session) enterDomain(ctx context.Context, domain string) error {
	if s.Context() == ctxDomain {
		if s.domain == domain {
			return nil
		}
		if err := s.leaveDomain(ctx); err != nil {
			return err
		}
	}
	if s.Context() != ctxRoot {
		return s.fail(&Error{Kind: KindProtocol, Err: errorf("session in context %q, not at the root", s.Context())})
	}
	cmd, err := NewCommand(Keyword("UPDATE Domain name"), Value("domain", domain))
	if err != nil {
		return err
	}
	if _, err = s.step(ctx, cmd, ctxDomain); err != nil {
		return err
	}
	s.domain, s.enteredDomain = domain, time.Now()
	return nil
}

// list runs a LIST in the current context and returns its rows.
func (s *Session) list(ctx context.Context, cmd Command, expect string) ([]string, error) {
	ans, err := s.step(ctx, cmd, expect)
	if err != nil {
		return nil, err
	}
	return ParseList(ans.Lines).Rows, nil
}

// findIn looks for name among LIST rows (case-insensitively, as Axigen
// names are) and returns the row as Axigen spells it.
func findIn(rows []string, name string) (string, bool) {
	for _, r := range rows {
		if strings.EqualFold(r, name) {
			return r, true
		}
	}
	return "", false
}

// readAccountIn reads an account from the domain context, back to it; with
// stay set, a found account's session is left in its contact info context,
// where applyInContact goes on without entering it again.
func (s *Session) readAccountIn(ctx context.Context, name string, stay bool) (AccountState, bool, error) {
	cmd, err := NewCommand(Keyword("LIST Accounts"), Value("account name", name))
	if err != nil {
		return AccountState{}, false, err
	}
	rows, err := s.list(ctx, cmd, ctxDomain)
	if err != nil {
		return AccountState{}, false, err
	}
	found, ok := findIn(rows, name)
	if !ok {
		return AccountState{}, false, nil
	}
	enter, err := NewCommand(Keyword("UPDATE Account name"), Value("account name", found))
	if err != nil {
		return AccountState{}, false, err
	}
	// One round trip: the account was just listed, so UPDATE fails only if
	// it went meanwhile, and the reads after it change nothing wherever
	// they run (the failed operation's session is backed out).
	cmds := accountReads(enter)
	expect := []string{ctxAccount, ctxAccount, ctxContact, ctxContact}
	if !stay {
		cmds, expect = append(cmds, cmdBack, cmdBack), append(expect, ctxAccount, ctxDomain)
	}
	ans, err := s.steps(ctx, cmds, expect)
	if err != nil {
		return AccountState{}, false, err
	}
	return accountFromReads(found, ans), true, nil
}

// readGroupIn reads a group from the domain context, back to it.
func (s *Session) readGroupIn(ctx context.Context, name string) (GroupState, bool, error) {
	cmd, err := NewCommand(Keyword("LIST Groups"), Value("group name", name))
	if err != nil {
		return GroupState{}, false, err
	}
	rows, err := s.list(ctx, cmd, ctxDomain)
	if err != nil {
		return GroupState{}, false, err
	}
	found, ok := findIn(rows, name)
	if !ok {
		return GroupState{}, false, nil
	}
	st := GroupState{Name: found}
	enter, err := NewCommand(Keyword("UPDATE Group name"), Value("group name", found))
	if err != nil {
		return st, false, err
	}
	// One round trip, as for an account; the listing comes last, where its
	// answer must be all the server has sent.
	ans, err := s.steps(ctx, []Command{enter, mustKeywords("LIST Addresses")}, []string{ctxGroup, ctxGroup})
	if err != nil {
		return st, false, err
	}
	members := ParseList(ans[1].Lines).Rows
	st.Members = append([]string{}, members...)
	slices.Sort(st.Members)
	if _, err := s.step(ctx, cmdBack, ctxDomain); err != nil {
		return st, false, err
	}
	return st, true, nil
}

// leaveDomain goes from the domain context back to the root. The client's
// changes are saved by the COMMITs of their own contexts: the domain's
// context holds nothing unsaved, and BACK leaves it as it is.
func (s *Session) leaveDomain(ctx context.Context) error {
	_, err := s.step(ctx, cmdBack, ctxRoot)
	return err
}

// run sends a plan's commands from the domain context.
func (s *Session) run(ctx context.Context, p *Plan) error {
	return s.runGrouped(ctx, p.Commands, p.expect)
}

// applyInContact sends a plan for an existing account from that account's
// contact info context, where readAccountIn left the session: the plan's
// opening commands that would enter the account and its contact info are
// not sent again, which spares four round trips per delivery.
func (s *Session) applyInContact(ctx context.Context, p *Plan) error {
	if p.Empty() {
		return s.backTo(ctx, ctxAccount, ctxDomain)
	}
	// planAccount opens an existing account's plan with UPDATE Account, then
	// CONFIG ContactInfo when it sets contact fields.
	cmds, expect := p.Commands[1:], p.expect[1:]
	if len(cmds) > 0 && cmds[0].line == cmdConfigContact.line {
		cmds, expect = cmds[1:], expect[1:]
	} else if _, err := s.step(ctx, cmdBack, ctxAccount); err != nil {
		return err
	}
	return s.runGrouped(ctx, cmds, expect)
}

// inDomain runs fn in domain's context on a pooled session; fn must return
// with the session back in that context, where the pool parks it for the
// next operation: entering the domain and leaving it would otherwise cost
// two of the ten or so round trips of an account's update.
func (c *Client) inDomain(ctx context.Context, op, domain string, fn func(*Session) error) error {
	if domain == "" {
		return withOp(unsafeValue("domain", "empty name"), op)
	}
	if err := checkValue("domain", domain); err != nil {
		return withOp(err, op)
	}
	err := c.pool.With(ctx, func(s *Session) error {
		if err := s.enterDomain(ctx, domain); err != nil {
			return err
		}
		return fn(s)
	})
	return withOp(err, op)
}

// ReadAccount returns an account's state; found is false when Axigen has no
// account of that name.
func (c *Client) ReadAccount(ctx context.Context, domain, name string) (st AccountState, found bool, err error) {
	if err := checkName("account name", name); err != nil {
		return st, false, withOp(err, "read account")
	}
	err = c.inDomain(ctx, "read account "+display(name)+"@"+display(domain), domain, func(s *Session) error {
		var err error
		st, found, err = s.readAccountIn(ctx, name, false)
		return err
	})
	return st, found, err
}

// ReadGroup returns a group's state; found is false when there is none.
func (c *Client) ReadGroup(ctx context.Context, domain, name string) (st GroupState, found bool, err error) {
	if err := checkName("group name", name); err != nil {
		return st, false, withOp(err, "read group")
	}
	err = c.inDomain(ctx, "read group "+display(name)+"@"+display(domain), domain, func(s *Session) error {
		var err error
		st, found, err = s.readGroupIn(ctx, name)
		return err
	})
	return st, found, err
}

// ListAccounts returns the names of a domain's accounts.
func (c *Client) ListAccounts(ctx context.Context, domain string) ([]string, error) {
	return c.listNames(ctx, domain, "LIST Accounts", "list accounts of "+display(domain))
}

// ListGroups returns the names of a domain's groups.
func (c *Client) ListGroups(ctx context.Context, domain string) ([]string, error) {
	return c.listNames(ctx, domain, "LIST Groups", "list groups of "+display(domain))
}

func (c *Client) listNames(ctx context.Context, domain, kw, op string) ([]string, error) {
	var names []string
	err := c.inDomain(ctx, op, domain, func(s *Session) error {
		rows, err := s.list(ctx, mustKeywords(kw), ctxDomain)
		if err != nil {
			return err
		}
		names = rows
		return nil
	})
	return names, err
}

// checkName refuses a name or address that LIST cannot show back: a LIST
// row's name is its first blank-separated word (docs/axigen-cli.md), and
// Axigen's names and addresses hold no blanks.
func checkName(field, name string) error {
	if name == "" {
		return unsafeValue(field, "empty name")
	}
	if strings.ContainsFunc(name, unicode.IsSpace) {
		return unsafeValue(field, "a name with blanks")
	}
	if err := checkValue(field, name); err != nil {
		return err
	}
	return nil
}

// checkAccount refuses a desired account with a value that cannot be sent,
// before anything is sent.
func checkAccount(a schema.Account, previousName string) error {
	if err := checkName("account name", a.Name); err != nil {
		return err
	}
	if previousName != "" {
		if err := checkValue("previous account name", previousName); err != nil {
			return err
		}
	}
	if err := checkValue("password", a.Password); err != nil {
		return err
	}
	if err := checkValue("initial password", a.InitialPassword); err != nil {
		return err
	}
	for k, v := range a.Contact {
		if !isFieldName(k) {
			return unsafeValue("contact field name "+display(k), "not a plain field name")
		}
		if err := checkValue("contact."+k, v); err != nil {
			return err
		}
	}
	return nil
}

func isFieldName(k string) bool {
	return isKeyword(k) && !strings.Contains(k, " ") && k[0] > '9'
}

// contactFieldsFor lists the contact fields to compare: those the desired
// state names, the eleven in their order, then any other, sorted.
func contactFieldsFor(desired map[string]string) []string {
	var fields, extra []string
	for _, f := range schema.ContactFields {
		if _, ok := desired[f]; ok {
			fields = append(fields, f)
		}
	}
	for k := range desired {
		if !slices.Contains(schema.ContactFields, k) {
			extra = append(extra, k)
		}
	}
	slices.Sort(extra)
	return append(fields, extra...)
}

// PlanAccount reads Axigen's state and returns the commands ApplyAccount
// would send, sending none of them. See ApplyAccount for previousName.
func (c *Client) PlanAccount(ctx context.Context, domain string, desired schema.Account, previousName string) (*Plan, error) {
	return c.account(ctx, domain, desired, previousName, false)
}

// ApplyAccount makes Axigen hold the desired account and returns the plan
// it sent. It reads the account named desired.Name; when there is none and
// previousName (the name the entry had before a rename, known from the
// journal) names an existing account, that account is renamed; otherwise
// the account is created. When both names exist the desired one is updated
// and the previous one left alone: deleting it is a separate decision.
//
// The contact fields desired.Contact names are compared one by one and only
// differing ones are set; an empty value clears a field with SET field ""
// (the one form the client uses to clear: docs/axigen-cli.md), and a field
// desired.Contact does not name is left as Axigen has it. Axigen
// never shows a password back, so a non-empty desired.Password is always
// set: applying twice sends nothing the second time only when the desired
// state carries no password. An account created without a password gets a
// random one (see WithPasswordGenerator).
//
// An existing account whose Associated LDAP ID differs from desired.LDAPID
// (both set) belongs to another directory entry: that is a KindConflict
// error and nothing is changed. Only Axigen's own directory sync sets the
// association, so an account without one (an empty value, or a placeholder
// such as "none": see associated) is matched by name, never a conflict.
func (c *Client) ApplyAccount(ctx context.Context, domain string, desired schema.Account, previousName string) (*Plan, error) {
	return c.account(ctx, domain, desired, previousName, true)
}

func (c *Client) account(ctx context.Context, domain string, desired schema.Account, previousName string, apply bool) (*Plan, error) {
	op := "apply account " + display(desired.Name) + "@" + display(domain)
	if !apply {
		op = "plan account " + display(desired.Name) + "@" + display(domain)
	}
	if err := checkAccount(desired, previousName); err != nil {
		return nil, withOp(err, op)
	}
	var plan *Plan
	err := c.inDomain(ctx, op, domain, func(s *Session) error {
		// Applying, a found account's session stays in its contact info
		// context, where the plan goes on (the pool unwinds it on error).
		cur, found, err := s.readAccountIn(ctx, desired.Name, apply)
		if err != nil {
			return err
		}
		if !found && previousName != "" && !strings.EqualFold(previousName, desired.Name) {
			if cur, found, err = s.readAccountIn(ctx, previousName, apply); err != nil {
				return err
			}
		}
		if found && associated(cur.LDAPID) && associated(desired.LDAPID) && !strings.EqualFold(cur.LDAPID, desired.LDAPID) {
			return &Error{Kind: KindConflict, Err: errorf("account %q is associated with LDAP ID %q, not %q", cur.Name, cur.LDAPID, desired.LDAPID)}
		}
		if plan, err = c.planAccount(domain, desired, cur, found); err != nil {
			return err
		}
		switch {
		case !apply:
			return nil
		case found:
			return s.applyInContact(ctx, plan)
		}
		return s.run(ctx, plan)
	})
	if err != nil {
		return nil, err
	}
	return plan, nil
}

// associated reports whether an Associated LDAP ID names a directory
// entry. What a real server shows for an account without one is unknown
// (docs/axigen-cli.md), so an empty value and the usual placeholders, with
// or without brackets or quotes around them, count as no association.
func associated(id string) bool {
	switch strings.ToLower(strings.Trim(strings.TrimSpace(id), `()<>[]{}"' `)) {
	case "", "-", "none", "null", "nil", "n/a", "na", "not set", "unset", "not associated":
		return false
	}
	return true
}

// planAccount computes the commands that turn cur (absent when !found)
// into desired.
func (c *Client) planAccount(domain string, desired schema.Account, cur AccountState, found bool) (*Plan, error) {
	p := &Plan{Domain: domain, Object: "account " + quoteForDisplay(desired.Name)}
	fields := contactFieldsFor(desired.Contact)
	var sets []Command
	for _, f := range fields {
		want := desired.Contact[f]
		if found && cur.Contact[f] == want || !found && want == "" {
			continue
		}
		cmd, err := NewCommand(Keyword("SET "+f), Value("contact."+f, want))
		if err != nil {
			return nil, err
		}
		sets = append(sets, cmd)
	}
	var head []Command
	if !found {
		pw := desired.Password
		if pw == "" {
			pw = desired.InitialPassword
		}
		if pw == "" {
			var err error
			if pw, err = c.newPassword(); err != nil {
				return nil, err
			}
		}
		add, err := NewCommand(Keyword("ADD Account name"), Value("account name", desired.Name), Keyword("password"), Secret("password", pw))
		if err != nil {
			return nil, err
		}
		head = append(head, add)
	} else {
		if cur.Name != desired.Name {
			set, err := NewCommand(Keyword("SET name"), Value("account name", desired.Name))
			if err != nil {
				return nil, err
			}
			head = append(head, set)
		}
		if desired.Password != "" {
			set, err := NewCommand(Keyword("SET password"), Secret("password", desired.Password))
			if err != nil {
				return nil, err
			}
			head = append(head, set)
		}
		if len(head) == 0 && len(sets) == 0 {
			return p, nil
		}
		enter, err := NewCommand(Keyword("UPDATE Account name"), Value("account name", cur.Name))
		if err != nil {
			return nil, err
		}
		head = append([]Command{enter}, head...)
	}
	if !found {
		// Real clients commit the new account first and set its contact
		// info in an UPDATE of its own (docs/axigen-cli.md); none sets it
		// inside the ADD context.
		p.add(head[0], ctxAccount)
		p.add(cmdCommit, ctxDomain)
		if len(sets) == 0 {
			return p, nil
		}
		enter, err := NewCommand(Keyword("UPDATE Account name"), Value("account name", desired.Name))
		if err != nil {
			return nil, err
		}
		head = []Command{enter}
	}
	// An existing account's contact info comes first, so that an apply
	// following a read (which ends in that context) goes straight on.
	p.add(head[0], ctxAccount)
	if len(sets) > 0 {
		p.add(cmdConfigContact, ctxContact)
		for _, cmd := range sets {
			p.add(cmd, ctxContact)
		}
		p.add(cmdDone, ctxAccount)
	}
	for _, cmd := range head[1:] {
		p.add(cmd, ctxAccount)
	}
	p.add(cmdCommit, ctxDomain)
	return p, nil
}

func quoteForDisplay(v string) string {
	q, err := Quote(v)
	if err != nil {
		return refusedValue
	}
	return q
}

// refusedValue stands for a value that cannot be sent in errors: a refused
// value is never repeated, so that it cannot forge log lines either.
const refusedValue = "(refused value)"

// display returns v for an error's Op, or refusedValue.
func display(v string) string {
	if checkValue("", v) != nil {
		return refusedValue
	}
	return v
}

// SetAccountEnabled turns an account's logins and mail delivery off or back
// on, keeping its mailbox: disabling sets the services of its Limits to the
// empty set, enabling resets them to what the account inherits (its domain's
// or account class's). It reads the Limits first and sends nothing when the
// account is already so; found is false when there is no such account.
// The forms are in one place (docs/axigen-cli.md, "Disabling an account").
func (c *Client) SetAccountEnabled(ctx context.Context, domain, name string, enabled bool) (p *Plan, found bool, err error) {
	op := "disable account " + display(name) + "@" + display(domain)
	if enabled {
		op = "enable account " + display(name) + "@" + display(domain)
	}
	if err := checkName("account name", name); err != nil {
		return nil, false, withOp(err, op)
	}
	p = &Plan{Domain: domain, Object: "account " + quoteForDisplay(name)}
	err = c.inDomain(ctx, op, domain, func(s *Session) error {
		list, err := NewCommand(Keyword("LIST Accounts"), Value("account name", name))
		if err != nil {
			return err
		}
		rows, err := s.list(ctx, list, ctxDomain)
		if err != nil {
			return err
		}
		cur, ok := findIn(rows, name)
		if !ok {
			return nil
		}
		found = true
		enter, err := NewCommand(Keyword("UPDATE Account name"), Value("account name", cur))
		if err != nil {
			return err
		}
		// One round trip, as readAccountIn's.
		ans, err := s.steps(ctx, []Command{enter, cmdConfigLimits, cmdShow}, []string{ctxAccount, ctxLimits, ctxLimits})
		if err != nil {
			return err
		}
		show := ans[2]
		change := cmdDisableServices
		if enabled {
			change = cmdResetServices
		}
		if servicesAre(ParseShow(show.Lines), enabled) {
			return s.backTo(ctx, ctxAccount, ctxDomain)
		}
		p.add(enter, ctxAccount)
		p.add(cmdConfigLimits, ctxLimits)
		p.add(change, ctxLimits)
		p.add(cmdDone, ctxAccount)
		p.add(cmdCommit, ctxDomain)
		// The session is in the Limits already: send the plan's rest.
		rest := &Plan{Commands: p.Commands[2:], expect: p.expect[2:]}
		return s.run(ctx, rest)
	})
	if err != nil {
		return nil, false, err
	}
	return p, found, nil
}

// servicesAre reports whether a Limits SHOW says the account is already
// enabled (its services inherited: the value carries a note such as
// "[inherited]") or disabled (the empty set "()"). When the answer does not
// say, it reports false, and the change is sent: it is idempotent.
func servicesAre(fields []Field, enabled bool) bool {
	for _, f := range fields {
		if !strings.EqualFold(f.Name, "services") {
			continue
		}
		if enabled {
			return f.Annotation != ""
		}
		return f.Annotation == "" && strings.ReplaceAll(f.Value, " ", "") == "()"
	}
	return false
}

// backTo sends BACK for each context in turn, in one round trip: BACK
// only discards.
func (s *Session) backTo(ctx context.Context, contexts ...string) error {
	cmds := make([]Command, len(contexts))
	for i := range cmds {
		cmds[i] = cmdBack
	}
	_, err := s.steps(ctx, cmds, contexts)
	return err
}

// DeleteAccount removes an account; it sends no REMOVE when there is none.
func (c *Client) DeleteAccount(ctx context.Context, domain, name string) (*Plan, error) {
	return c.remove(ctx, domain, name, "account", "LIST Accounts", "REMOVE Account name")
}

// DeleteGroup removes a group; it sends no REMOVE when there is none.
func (c *Client) DeleteGroup(ctx context.Context, domain, name string) (*Plan, error) {
	return c.remove(ctx, domain, name, "group", "LIST Groups", "REMOVE Group name")
}

func (c *Client) remove(ctx context.Context, domain, name, what, listKw, removeKw string) (*Plan, error) {
	op := "delete " + what + " " + display(name) + "@" + display(domain)
	if err := checkName(what+" name", name); err != nil {
		return nil, withOp(err, op)
	}
	p := &Plan{Domain: domain, Object: what + " " + quoteForDisplay(name)}
	err := c.inDomain(ctx, op, domain, func(s *Session) error {
		list, err := NewCommand(Keyword(listKw), Value(what+" name", name))
		if err != nil {
			return err
		}
		rows, err := s.list(ctx, list, ctxDomain)
		if err != nil {
			return err
		}
		if found, ok := findIn(rows, name); ok {
			rm, err := NewCommand(Keyword(removeKw), Value(what+" name", found))
			if err != nil {
				return err
			}
			// REMOVE acts at once; the COMMIT that the document's recipe
			// follows it with leaves the domain (deletes are rare: the
			// next operation enters it again).
			p.add(rm, ctxDomain)
			p.add(cmdCommit, ctxRoot)
		}
		return s.run(ctx, p)
	})
	if err != nil {
		return nil, err
	}
	return p, nil
}

// checkGroup refuses a desired group with a value that cannot be sent.
func checkGroup(g schema.Group, previousName string) error {
	if err := checkName("group name", g.Name); err != nil {
		return err
	}
	if previousName != "" {
		if err := checkValue("previous group name", previousName); err != nil {
			return err
		}
	}
	for _, m := range g.Members {
		if err := checkName("member address", m); err != nil {
			return err
		}
	}
	return nil
}

// PlanGroup reads Axigen's state and returns the commands ApplyGroup would
// send, sending none of them.
func (c *Client) PlanGroup(ctx context.Context, domain string, desired schema.Group, previousName string) (*Plan, error) {
	return c.group(ctx, domain, desired, previousName, false)
}

// ApplyGroup makes Axigen hold the desired group and returns the plan it
// sent: it creates the group, renames it from previousName (as for
// ApplyAccount), and adds and removes member addresses (compared without
// regard to case) so that they are exactly desired.Members.
func (c *Client) ApplyGroup(ctx context.Context, domain string, desired schema.Group, previousName string) (*Plan, error) {
	return c.group(ctx, domain, desired, previousName, true)
}

func (c *Client) group(ctx context.Context, domain string, desired schema.Group, previousName string, apply bool) (*Plan, error) {
	op := "apply group " + display(desired.Name) + "@" + display(domain)
	if !apply {
		op = "plan group " + display(desired.Name) + "@" + display(domain)
	}
	if err := checkGroup(desired, previousName); err != nil {
		return nil, withOp(err, op)
	}
	var plan *Plan
	err := c.inDomain(ctx, op, domain, func(s *Session) error {
		cur, found, err := s.readGroupIn(ctx, desired.Name)
		if err != nil {
			return err
		}
		if !found && previousName != "" && !strings.EqualFold(previousName, desired.Name) {
			if cur, found, err = s.readGroupIn(ctx, previousName); err != nil {
				return err
			}
		}
		if plan, err = planGroup(domain, desired, cur, found); err != nil {
			return err
		}
		if !apply {
			return nil
		}
		return s.run(ctx, plan)
	})
	if err != nil {
		return nil, err
	}
	return plan, nil
}

func planGroup(domain string, desired schema.Group, cur GroupState, found bool) (*Plan, error) {
	p := &Plan{Domain: domain, Object: "group " + quoteForDisplay(desired.Name)}
	want := map[string]string{} // lower-case -> as desired
	var wantOrder []string
	for _, m := range desired.Members {
		k := strings.ToLower(m)
		if _, dup := want[k]; !dup {
			want[k] = m
			wantOrder = append(wantOrder, m)
		}
	}
	slices.Sort(wantOrder)
	have := map[string]bool{}
	var edits []Command
	for _, m := range cur.Members {
		k := strings.ToLower(m)
		have[k] = true
		if _, keep := want[k]; !keep {
			cmd, err := NewCommand(Keyword("REMOVE Address"), Value("member address", m))
			if err != nil {
				return nil, err
			}
			edits = append(edits, cmd)
		}
	}
	for _, m := range wantOrder {
		if !have[strings.ToLower(m)] {
			cmd, err := NewCommand(Keyword("ADD Address"), Value("member address", m))
			if err != nil {
				return nil, err
			}
			edits = append(edits, cmd)
		}
	}
	name := cur.Name
	if !found {
		// The recipe: create, commit, then enter the group for its members.
		add, err := NewCommand(Keyword("ADD Group name"), Value("group name", desired.Name))
		if err != nil {
			return nil, err
		}
		p.add(add, ctxGroup)
		p.add(cmdCommit, ctxDomain)
		name = desired.Name
	} else if cur.Name != desired.Name {
		set, err := NewCommand(Keyword("SET name"), Value("group name", desired.Name))
		if err != nil {
			return nil, err
		}
		edits = append([]Command{set}, edits...)
	}
	if len(edits) > 0 {
		enter, err := NewCommand(Keyword("UPDATE Group name"), Value("group name", name))
		if err != nil {
			return nil, err
		}
		p.add(enter, ctxGroup)
		for _, cmd := range edits {
			p.add(cmd, ctxGroup)
		}
		p.add(cmdCommit, ctxDomain)
	}
	return p, nil
}
