package axigensim

import (
	"slices"
	"strings"
)

// This file is the one place that holds the protocol forms docs/axigen-cli.md
// could not confirm. Each constant says whether its form is documented or
// chosen; to follow a real server more closely, change it here only.
//
// Documented (docs/axigen-cli.md):
//   - the banner contains "Welcome to AXIGEN's Command Line Interface";
//   - prompts are "<" + context path + "> " with no line break; the root
//     prompt is "<#> ", the login prompts are "<login> " and "<password> ";
//   - status lines are "+OK: <text>" or "-ERR: <text>", followed by the prompt;
//   - "+OK: command successful", "+OK: Authentication successful", and a COMMIT
//     text containing "committing changes and switching back to previous context";
//   - SHOW: empty line, title, "name = value" lines, empty line; registry
//     values (SHOW RegistryInformation) unquoted, other string values quoted;
//   - LIST Accounts/Groups/Domains: empty line, title, empty line, header
//     row, dashed line, rows, empty line (five lines before the first row);
//   - LIST Addresses: empty line, title, rows, empty line (no header, no
//     dashed line);
//   - an account ldapgate created has no Associated LDAP ID (only Axigen's
//     own directory sync sets one).
//
// Chosen (unconfirmed by the document):
//   - USER answers with the "<password> " prompt alone, no "+OK" line first
//     (okBeforePasswordPrompt);
//   - the texts of every -ERR, of DONE, BACK and of the farewell;
//   - SHOW titles, LIST titles and headers (one column, "name");
//   - what an empty list looks like (the same shape with no rows);
//   - the value shown for "no LDAP association" (empty: noLDAPID);
//   - SHOW string values are double-quoted with '"' and '\' backslash-escaped,
//     the same rule as the double-quoted input form (showValue);
//   - the version line, maxAuthErrors' default (3) and maxErrors' (10);
//   - the Limits sub-context of an account: its prompt name ("limits"), SET
//     services with a set in parentheses, the empty set "()", RESET services
//     going back to the inherited services, and SHOW's "services" line.
const (
	bannerLine = "Welcome to AXIGEN's Command Line Interface"

	contextLogin    = "login"
	contextPassword = "password"

	// okBeforePasswordPrompt: whether USER is answered by a "+OK" line before
	// the "<password> " prompt. Unconfirmed; the client accepts both.
	okBeforePasswordPrompt = false

	statusOK         = "command successful"
	statusAuthOK     = "Authentication successful"
	statusCommit     = "committing changes and switching back to previous context"
	statusDone       = "saving changes and switching back to previous context"     // chosen
	statusBack       = "discarding changes and switching back to previous context" // chosen
	statusFarewell   = "have a nice day"                                           // likely, per the doc
	statusUserOK     = "Enter password"                                            // only when okBeforePasswordPrompt
	errAuthFailed    = "Authentication failed"                                     // chosen
	errNotLoggedIn   = "You must login first"                                      // chosen
	errUnknownCmd    = "Invalid command or syntax error"                           // chosen
	errNoSuchDomain  = "Domain does not exist"                                     // chosen
	errNoSuchAccount = "Account does not exist"                                    // chosen
	errNoSuchGroup   = "Group does not exist"                                      // chosen
	errAccountExists = "Account already exists"                                    // chosen
	errGroupExists   = "Group already exists"                                      // chosen
	errAddrExists    = "Address already in group"                                  // chosen
	errNoSuchAddr    = "Address not in group"                                      // chosen
	errNoSuchField   = "No such attribute"                                         // chosen
	errEmptyValue    = "Value may not be empty"                                    // chosen
	errBadQuoting    = "Syntax error: unterminated quoted value"                   // chosen
	errGone          = "Object was removed by another session"                     // chosen

	versionLine          = "10.6.30|Linux|x86_64"
	defaultMaxAuthErrors = 3
	defaultMaxErrors     = 10

	showTitleAccount  = "The account settings:"        // chosen
	showTitleRegistry = "The registry information:"    // documented example
	showTitleContact  = "The contact information:"     // chosen
	showTitleGroup    = "The group settings:"          // chosen
	showTitleLimits   = "The limits settings:"         // chosen
	listTitleAccounts = "The list of accounts:"        // chosen
	listTitleGroups   = "The list of groups:"          // chosen
	listTitleAddrs    = "The list of group addresses:" // chosen
	listTitleDomains  = "The list of domains:"         // chosen
	listHeaderName    = "name"                         // chosen

	registryAccountName = "Account name"       // chosen
	registryLDAPID      = "Associated LDAP ID" // documented
	registryLDAPDN      = "Associated LDAP DN" // documented
	contextLimits       = "limits"             // chosen
	limitsServices      = "services"           // documented: SET services (...)
	inheritedNote       = "inherited"          // chosen: SHOW's note on an inherited value
	noLDAPID            = ""                   // chosen: unknown on a real server
)

// loginServices are the services that let a user in or bring mail to the
// mailbox (chosen names: smtpIn receives; the others are logins).
var loginServices = []string{"smtpIn", "imap", "pop3", "webmail", "activesync"}

// servesLogins reports whether an account with these services (nil:
// inherited, all on) accepts logins or mail.
func servesLogins(services []string) bool {
	if services == nil {
		return true
	}
	return slices.ContainsFunc(services, func(s string) bool {
		return slices.ContainsFunc(loginServices, func(l string) bool { return strings.EqualFold(l, s) })
	})
}

// serviceSet renders a set of services as SET and SHOW write it.
func serviceSet(services []string) string { return "(" + strings.Join(services, " ") + ")" }

// contactFields are the fields the ContactInfo context knows, in the order
// SHOW prints them: the eleven ldapgate mirrors, then some it does not.
var contactFields = []string{
	"firstName", "lastName", "nickName", "personalEmail", "businessEmail",
	"phone", "mobilePhone", "homePhone", "businessPhone", "homeAddress", "businessAddress",
	"middleName", "company", "department", "title",
}

// showValue renders a string value for SHOW output (chosen form: double
// quotes, with '"' and '\' escaped by a backslash).
func showValue(v string) string {
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range v {
		if r == '"' || r == '\\' {
			b.WriteByte('\\')
		}
		b.WriteRune(r)
	}
	b.WriteByte('"')
	return b.String()
}

// prompt renders the prompt of a context path (documented form).
func prompt(path []string) string {
	return "<" + strings.Join(path, "-") + "#> "
}

// listing renders a LIST answer body with a header (documented shape of
// LIST Accounts and LIST Groups, chosen texts).
func listing(title, header string, rows []string) string {
	width := len(header)
	for _, r := range rows {
		if len(r) > width {
			width = len(r)
		}
	}
	var b strings.Builder
	b.WriteString("\r\n" + title + "\r\n\r\n")
	b.WriteString(header + "\r\n")
	b.WriteString(strings.Repeat("-", width) + "\r\n")
	for _, r := range rows {
		b.WriteString(r + "\r\n")
	}
	b.WriteString("\r\n")
	return b.String()
}

// plainListing renders a LIST answer body without header or dashes
// (documented shape of LIST Addresses, chosen title).
func plainListing(title string, rows []string) string {
	var b strings.Builder
	b.WriteString("\r\n" + title + "\r\n")
	for _, r := range rows {
		b.WriteString(r + "\r\n")
	}
	b.WriteString("\r\n")
	return b.String()
}

// showing renders a SHOW answer body (documented shape, chosen titles).
func showing(title string, fields [][2]string) string {
	var b strings.Builder
	b.WriteString("\r\n" + title + "\r\n")
	for _, f := range fields {
		b.WriteString(f[0] + " = " + f[1] + "\r\n")
	}
	b.WriteString("\r\n")
	return b.String()
}
