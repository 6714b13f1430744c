package axigen

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/ldapgate/ldapgate/schema"
)

// ReadCheck is one read command of CheckReads and what the client made of
// its answer.
type ReadCheck struct {
	// Command is the command as sent.
	Command string
	// OK is whether the client understood the answer.
	OK bool
	// Detail says what was read, or what did not match the expected shape.
	Detail string
	// Raw holds the answer's output lines when OK is false, so that the
	// answer of a real server can correct the client's notion of its format.
	Raw []string
}

// CheckReads runs only read commands in domain — LIST Accounts, LIST
// Groups, SHOW RegistryInformation and SHOW of one account's contact info,
// LIST Addresses of one group — and reports for each whether the client
// parses its answer. Every context it enters is left with BACK, so
// nothing is changed. The error is for a session that could not be used
// at all.
func (c *Client) CheckReads(ctx context.Context, domain string) ([]ReadCheck, error) {
	var out []ReadCheck
	err := c.inDomain(ctx, "check reads in "+display(domain), domain, func(s *Session) error {
		var err error
		out, err = s.checkReads(ctx)
		return err
	})
	if errors.Is(err, errCheckStopped) {
		return out, nil // the failed check says why
	}
	return out, err
}

// errCheckStopped ends a check whose command failed, so that the pool
// unwinds the session from wherever it stopped.
var errCheckStopped = errors.New("check stopped")

func (s *Session) checkReads(ctx context.Context) ([]ReadCheck, error) {
	var out []ReadCheck
	// run sends cmd and judges its output lines with judge, which returns
	// what it read or why the answer is not understood.
	run := func(cmd Command, expect string, judge func([]string) (string, bool)) bool {
		line := cmd.masked
		ans, err := s.step(ctx, cmd, expect)
		if err != nil {
			out = append(out, ReadCheck{Command: line, Detail: err.Error(), Raw: answerLines(ans)})
			return false
		}
		detail, ok := judge(ans.Lines)
		rc := ReadCheck{Command: line, OK: ok, Detail: detail}
		if !ok {
			rc.Raw = ans.Lines
		}
		out = append(out, rc)
		return true
	}
	var accounts, groups []string
	if !run(mustKeywords("LIST Accounts"), ctxDomain, func(lines []string) (string, bool) {
		accounts = ParseList(lines).Rows
		if _, ok := findIn(accounts, "postmaster"); !ok {
			// Every real domain has one: a listing without it was misread.
			return fmt.Sprintf("%d names read, but not postmaster, which every domain has", len(accounts)), false
		}
		return fmt.Sprintf("%d accounts, postmaster among them", len(accounts)), namesPlain(accounts)
	}) {
		return out, errCheckStopped
	}
	if !run(mustKeywords("LIST Groups"), ctxDomain, func(lines []string) (string, bool) {
		groups = ParseList(lines).Rows
		return fmt.Sprintf("%d groups", len(groups)), namesPlain(groups)
	}) {
		return out, errCheckStopped
	}
	if name, ok := findIn(accounts, "postmaster"); ok {
		if !s.checkAccount(ctx, name, run) {
			return out, errCheckStopped
		}
	}
	if len(groups) > 0 {
		enter, err := NewCommand(Keyword("UPDATE Group name"), Value("group name", groups[0]))
		if err != nil {
			return out, err
		}
		if !run(enter, ctxGroup, func([]string) (string, bool) { return "entered", true }) {
			return out, errCheckStopped
		}
		if !run(mustKeywords("LIST Addresses"), ctxGroup, func(lines []string) (string, bool) {
			rows := ParseList(lines).Rows
			for _, r := range rows {
				if !strings.Contains(r, "@") {
					return fmt.Sprintf("row %q of group %q is no address", r, groups[0]), false
				}
			}
			return fmt.Sprintf("%d addresses in group %q", len(rows), groups[0]), true
		}) {
			return out, errCheckStopped
		}
		if _, err := s.step(ctx, cmdBack, ctxDomain); err != nil {
			return out, err
		}
	}
	return out, nil
}

// checkAccount reads one account's registry and contact info.
func (s *Session) checkAccount(ctx context.Context, name string, run func(Command, string, func([]string) (string, bool)) bool) bool {
	enter, err := NewCommand(Keyword("UPDATE Account name"), Value("account name", name))
	if err != nil || !run(enter, ctxAccount, func([]string) (string, bool) { return "entered", true }) {
		return false
	}
	if !run(mustKeywords("SHOW RegistryInformation"), ctxAccount, func(lines []string) (string, bool) {
		fields := ParseShow(lines)
		id, _ := showValue(fields, "Associated LDAP ID")
		if len(fields) == 0 {
			return "no \"name = value\" line", false
		}
		assoc := "no LDAP association"
		if associated(id) {
			assoc = "associated with LDAP ID " + id
		}
		return fmt.Sprintf("%d fields of %q, %s", len(fields), name, assoc), true
	}) {
		return false
	}
	if !run(mustKeywords("CONFIG ContactInfo"), ctxContact, func([]string) (string, bool) { return "entered", true }) {
		return false
	}
	if !run(cmdShow, ctxContact, func(lines []string) (string, bool) {
		var known []string
		for _, f := range ParseShow(lines) {
			if slices.Contains(schema.ContactFields, f.Name) {
				known = append(known, f.Name)
			}
		}
		if len(known) == 0 {
			return "none of the mirrored contact fields shown", false
		}
		return fmt.Sprintf("%d of the %d mirrored contact fields shown", len(known), len(schema.ContactFields)), true
	}) {
		return false
	}
	for _, to := range []string{ctxAccount, ctxDomain} {
		if _, err := s.step(ctx, cmdBack, to); err != nil {
			return false
		}
	}
	return true
}

// CheckPipelining reads domain's postmaster account twice, with only read
// commands: sent one by one, then sent together in one write (pipelining,
// docs/axigen-cli.md), and reports whether the server answered them alike,
// that is whether it reads commands sent ahead of their turn, as the
// client's deliveries need unless Config.NoPipelining is set. Nothing is
// changed. The error is for a session that could not be used at all.
func (c *Client) CheckPipelining(ctx context.Context, domain string) (ReadCheck, error) {
	var rc ReadCheck
	err := c.inDomain(ctx, "check pipelining in "+display(domain), domain, func(s *Session) error {
		list := mustKeywords("LIST Accounts")
		rows, err := s.list(ctx, list, ctxDomain)
		if err != nil {
			return err
		}
		name, ok := findIn(rows, "postmaster")
		if !ok {
			rc = ReadCheck{Command: list.masked, Detail: "no postmaster account to read", Raw: rows}
			return nil
		}
		enter, err := NewCommand(Keyword("UPDATE Account name"), Value("account name", name))
		if err != nil {
			return err
		}
		if !s.checkPipelined(ctx, enter, func(r ReadCheck) { rc = r }) {
			return errCheckStopped
		}
		return nil
	})
	if errors.Is(err, errCheckStopped) {
		return rc, nil // the failed check says why
	}
	return rc, err
}

// checkPipelined reads the account entered with enter twice, its commands
// sent one by one and then all together, and reports whether the server
// answered them alike: whether it reads commands sent ahead of their turn.
// A server that does not would leave the second read waiting for the
// command timeout; Config.NoPipelining is then the setting to use.
func (s *Session) checkPipelined(ctx context.Context, enter Command, report func(ReadCheck)) bool {
	cmds := []Command{enter, mustKeywords("SHOW RegistryInformation"), cmdConfigContact, cmdShow, cmdBack, cmdBack}
	expect := []string{ctxAccount, ctxAccount, ctxContact, ctxContact, ctxAccount, ctxDomain}
	read := func(pipelined bool) ([][]string, error) {
		ans, err := s.doAll(ctx, cmds, pipelined)
		if err != nil {
			return nil, err
		}
		var out [][]string
		for i, a := range ans {
			if !strings.EqualFold(a.Context, expect[i]) {
				return nil, s.fail(&Error{Kind: KindProtocol, Cmd: cmds[i].masked,
					Err: errorf("context %q after the command where %q was expected", a.Context, expect[i])})
			}
			out = append(out, a.Lines)
		}
		return out, nil
	}
	names := make([]string, len(cmds))
	for i, c := range cmds {
		names[i] = c.masked
	}
	rc := ReadCheck{Command: "sent together: " + strings.Join(names, "; ")}
	one, err := read(false)
	if err != nil {
		rc.Detail = "sent one by one: " + err.Error()
		report(rc)
		return false
	}
	all, err := read(true)
	switch {
	case err != nil:
		rc.Detail = err.Error() + " (a server that does not read commands sent ahead of their turn needs Config.NoPipelining)"
	case !slices.EqualFunc(one, all, slices.Equal):
		rc.Detail = "the answers differ from those to the commands sent one by one"
		for _, lines := range all {
			rc.Raw = append(rc.Raw, lines...)
		}
	default:
		rc.OK, rc.Detail = true, "answered as when sent one by one"
	}
	report(rc)
	return rc.OK
}

// namesPlain reports whether every name is one the client could send back.
func namesPlain(names []string) bool {
	return !slices.ContainsFunc(names, func(n string) bool { return checkName("name", n) != nil })
}

func answerLines(ans *Response) []string {
	if ans == nil {
		return nil
	}
	return ans.Lines
}
