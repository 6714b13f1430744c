package e2e

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	ber "github.com/go-asn1-ber/asn1-ber"
	"github.com/go-ldap/ldap/v3"
)

// OIDs of the Active Directory controls the gateway must relay untouched,
// and of a control no one knows.
const (
	oidDirSync      = "1.2.840.113556.1.4.841"
	oidNotification = "1.2.840.113556.1.4.528"
	oidUnknown      = "1.3.6.1.4.1.99999.7.7"
	oidUnknownExt   = "1.3.6.1.4.1.99999.7.8"
)

// scriptedUpstream is a fake directory that answers binds with success and
// a search carrying the unknown control with a scripted sequence of
// messages; it records every message it receives, byte for byte.
type scriptedUpstream struct {
	ln     net.Listener
	script [][]byte // answers to the marked search

	mu       sync.Mutex
	received [][]byte
}

func startScriptedUpstream(t *testing.T, script [][]byte) *scriptedUpstream {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u := &scriptedUpstream{ln: ln, script: script}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				u.serve(c)
			}()
		}
	}()
	return u
}

func (u *scriptedUpstream) url() string { return "ldap://" + u.ln.Addr().String() }

func (u *scriptedUpstream) serve(c net.Conn) {
	r := bufio.NewReader(c)
	for {
		raw, err := readRawMessage(r)
		if err != nil {
			return
		}
		u.mu.Lock()
		u.received = append(u.received, raw)
		u.mu.Unlock()
		p, err := ber.DecodePacketErr(raw)
		if err != nil || len(p.Children) < 2 {
			return
		}
		id, _ := p.Children[0].Value.(int64)
		u.mu.Lock()
		script := u.script
		u.mu.Unlock()
		var out [][]byte
		switch p.Children[1].Tag {
		case ldap.ApplicationBindRequest:
			out = [][]byte{resultMessage(id, ldap.ApplicationBindResponse)}
		case ldap.ApplicationSearchRequest:
			if bytes.Contains(raw, []byte(oidUnknown)) {
				for _, m := range script {
					out = append(out, withID(m, id))
				}
			} else {
				out = [][]byte{resultMessage(id, ldap.ApplicationSearchResultDone)}
			}
		case ldap.ApplicationExtendedRequest:
			for _, m := range script {
				out = append(out, withID(m, id))
			}
		case ldap.ApplicationUnbindRequest:
			return
		}
		for _, m := range out {
			if _, err := c.Write(m); err != nil {
				return
			}
		}
	}
}

// receivedWith returns the first received message containing marker.
func (u *scriptedUpstream) receivedWith(marker string) []byte {
	u.mu.Lock()
	defer u.mu.Unlock()
	for _, m := range u.received {
		if bytes.Contains(m, []byte(marker)) {
			return m
		}
	}
	return nil
}

// readRawMessage reads one whole BER element without decoding it.
func readRawMessage(r *bufio.Reader) ([]byte, error) {
	tag, err := r.ReadByte()
	if err != nil {
		return nil, err
	}
	first, err := r.ReadByte()
	if err != nil {
		return nil, err
	}
	msg := []byte{tag, first}
	length := int(first)
	if first&0x80 != 0 {
		n := int(first & 0x7f)
		if n == 0 || n > 4 {
			return nil, fmt.Errorf("length form 0x%02x", first)
		}
		length = 0
		for range n {
			b, err := r.ReadByte()
			if err != nil {
				return nil, err
			}
			msg = append(msg, b)
			length = length<<8 | int(b)
		}
	}
	body := make([]byte, length)
	if _, err := io.ReadFull(r, body); err != nil {
		return nil, err
	}
	return append(msg, body...), nil
}

func resultMessage(id int64, tag ber.Tag) []byte {
	op := ber.Encode(ber.ClassApplication, ber.TypeConstructed, tag, nil, "result")
	op.AppendChild(ber.NewInteger(ber.ClassUniversal, ber.TypePrimitive, ber.TagEnumerated, int64(0), "code"))
	op.AppendChild(octets(""))
	op.AppendChild(octets(""))
	return envelope(id, op)
}

// withID re-encodes a scripted message (built with ID 1) for id. Script
// messages use single-byte IDs so only that byte changes.
func withID(m []byte, id int64) []byte {
	p := ber.DecodePacket(m)
	p.Children[0] = ber.NewInteger(ber.ClassUniversal, ber.TypePrimitive, ber.TagInteger, id, "messageID")
	return p.Bytes()
}

// control encodes a Control with a raw value (nil: no value).
func control(oid string, critical bool, value []byte) *ber.Packet {
	c := ber.Encode(ber.ClassUniversal, ber.TypeConstructed, ber.TagSequence, nil, "control")
	c.AppendChild(octets(oid))
	if critical {
		c.AppendChild(ber.NewBoolean(ber.ClassUniversal, ber.TypePrimitive, ber.TagBoolean, true, "criticality"))
	}
	if value != nil {
		v := ber.Encode(ber.ClassUniversal, ber.TypePrimitive, ber.TagOctetString, nil, "value")
		v.Data.Write(value)
		c.AppendChild(v)
	}
	return c
}

// dirSyncValue is a DirSync request/response value with a binary cookie.
func dirSyncValue(flags int64, cookie []byte) []byte {
	seq := ber.Encode(ber.ClassUniversal, ber.TypeConstructed, ber.TagSequence, nil, "dirsync")
	seq.AppendChild(ber.NewInteger(ber.ClassUniversal, ber.TypePrimitive, ber.TagInteger, flags, "flags"))
	seq.AppendChild(ber.NewInteger(ber.ClassUniversal, ber.TypePrimitive, ber.TagInteger, int64(0), "maxAttrCount"))
	ck := ber.Encode(ber.ClassUniversal, ber.TypePrimitive, ber.TagOctetString, nil, "cookie")
	ck.Data.Write(cookie)
	seq.AppendChild(ck)
	return seq.Bytes()
}

// DirSync, the notification control and a control nobody knows, in the
// request and in every kind of response (entry, intermediate response,
// search done, extended response), cross the gateway byte for byte.
func TestSyncreplUnknownControlsRelayedUntouched(t *testing.T) {
	binary := []byte{0x00, 0xff, 0x30, 0x80, 0x04, 0x00, 'x', 0x81, 0x82, 0x01}

	entryOp := ber.Encode(ber.ClassApplication, ber.TypeConstructed, ldap.ApplicationSearchResultEntry, nil, "entry")
	entryOp.AppendChild(octets("CN=Alice,CN=Users,DC=example,DC=com"))
	attrs := ber.Encode(ber.ClassUniversal, ber.TypeConstructed, ber.TagSequence, nil, "attributes")
	a := ber.Encode(ber.ClassUniversal, ber.TypeConstructed, ber.TagSequence, nil, "attribute")
	a.AppendChild(octets("objectGUID"))
	vals := ber.Encode(ber.ClassUniversal, ber.TypeConstructed, ber.TagSet, nil, "values")
	vals.AppendChild(ber.NewString(ber.ClassUniversal, ber.TypePrimitive, ber.TagOctetString, string(binary), ""))
	a.AppendChild(vals)
	attrs.AppendChild(a)
	entryOp.AppendChild(attrs)

	ir := ber.Encode(ber.ClassApplication, ber.TypeConstructed, ldap.ApplicationIntermediateResponse, nil, "intermediate")
	ir.AppendChild(ber.NewString(ber.ClassContext, ber.TypePrimitive, 0, oidUnknownExt, "responseName"))
	irv := ber.Encode(ber.ClassContext, ber.TypePrimitive, 1, nil, "responseValue")
	irv.Data.Write(binary)
	ir.AppendChild(irv)

	doneOp := ber.Encode(ber.ClassApplication, ber.TypeConstructed, ldap.ApplicationSearchResultDone, nil, "done")
	doneOp.AppendChild(ber.NewInteger(ber.ClassUniversal, ber.TypePrimitive, ber.TagEnumerated, int64(0), "code"))
	doneOp.AppendChild(octets(""))
	doneOp.AppendChild(octets(""))

	script := [][]byte{
		envelope(1, entryOp, control(oidUnknown, false, binary)),
		envelope(1, ir),
		envelope(1, doneOp, control(oidDirSync, true, dirSyncValue(1, binary)), control(oidUnknown, false, binary)),
	}
	up := startScriptedUpstream(t, script)
	g := startGateway(t, "--upstream", up.url())

	c := dialRaw(t, g.URL)
	c.send(t, bindRequest(1, "CN=svc,CN=Users,DC=example,DC=com", "svc-pw"))
	c.expectResult(t, 1, 0)

	search := ber.DecodePacket(searchRequest(t, 2, "DC=example,DC=com", "(objectClass=user)", "objectGUID"))
	controls := ber.Encode(ber.ClassContext, ber.TypeConstructed, 0, nil, "controls")
	controls.AppendChild(control(oidDirSync, true, dirSyncValue(0x80000000, binary)))
	controls.AppendChild(control(oidNotification, true, nil))
	controls.AppendChild(control(oidUnknown, false, binary))
	search.AppendChild(controls)
	sent := search.Bytes()
	c.send(t, sent)

	var got []byte
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	r := bufio.NewReader(c.Conn)
	for range script {
		m, err := readRawMessage(r)
		if err != nil {
			t.Fatalf("reading the relayed answers: %v (got %x)", err, got)
		}
		got = append(got, m...)
	}
	var want []byte
	for _, m := range script {
		want = append(want, withID(m, 2)...)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("answers changed on the way:\n got  %x\n want %x", got, want)
	}
	if rcv := up.receivedWith(oidUnknown); !bytes.Equal(rcv, sent) {
		t.Errorf("request changed on the way:\n upstream got %x\n client sent  %x", rcv, sent)
	}

	// An extended operation nobody knows, with a control, both ways.
	ext := ber.Encode(ber.ClassApplication, ber.TypeConstructed, ldap.ApplicationExtendedRequest, nil, "extended")
	ext.AppendChild(ber.NewString(ber.ClassContext, ber.TypePrimitive, 0, oidUnknownExt, "name"))
	ev := ber.Encode(ber.ClassContext, ber.TypePrimitive, 1, nil, "value")
	ev.Data.Write(binary)
	ext.AppendChild(ev)
	extReq := envelope(3, ext, control(oidUnknown+".1", true, binary))
	extResp := ber.Encode(ber.ClassApplication, ber.TypeConstructed, ldap.ApplicationExtendedResponse, nil, "extended response")
	extResp.AppendChild(ber.NewInteger(ber.ClassUniversal, ber.TypePrimitive, ber.TagEnumerated, int64(0), "code"))
	extResp.AppendChild(octets(""))
	extResp.AppendChild(octets(""))
	extResp.AppendChild(ber.NewString(ber.ClassContext, ber.TypePrimitive, 10, oidUnknownExt, "responseName"))
	erv := ber.Encode(ber.ClassContext, ber.TypePrimitive, 11, nil, "responseValue")
	erv.Data.Write(binary)
	extResp.AppendChild(erv)
	up.mu.Lock()
	up.script = [][]byte{envelope(1, extResp, control(oidUnknown, false, binary))}
	up.mu.Unlock()
	c.send(t, extReq)
	m, err := readRawMessage(r)
	if err != nil {
		t.Fatalf("extended response: %v", err)
	}
	if want := withID(envelope(1, extResp, control(oidUnknown, false, binary)), 3); !bytes.Equal(m, want) {
		t.Errorf("extended response changed:\n got  %x\n want %x", m, want)
	}
	if rcv := up.receivedWith(oidUnknown + ".1"); !bytes.Equal(rcv, extReq) {
		t.Errorf("extended request changed:\n upstream got %x\n client sent  %x", rcv, extReq)
	}
	g.requireAlive(t)
}
