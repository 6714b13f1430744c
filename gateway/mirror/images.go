package mirror

import (
	"context"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/ldapgate/ldapgate/gateway"
	"github.com/ldapgate/ldapgate/internal/ldapwire"
	"github.com/ldapgate/ldapgate/schema"
	"github.com/ldapgate/ldapgate/store"
)

// Account images: what delivery would read, learnt from the write itself.
//
// Delivery brings Axigen to the state the directory holds for the entry
// (deliver.go's current), which costs a search per delivered write. A
// modify the gateway's own service identity makes (a provisioning system
// that writes as that identity) can ask for that state on the write
// itself, with RFC 4527's post-read control: the directory answers with
// the entry as the write left it, with the service identity's access, so
// exactly what a read would show, entryCSN included. Such an image serves
// the delivery of that write instead of a read, on these terms, which keep
// the state delivered the one a read would give:
//
//   - Every change of an entry made before a write, in the directory's
//     order, is in that write's post-read image: of images of one entry,
//     the one with the greatest entryCSN is kept, and serves the writes of
//     all of them (a delivery also settles the later committed records of
//     its entry, which must be in the state it delivers).
//   - Any other intercepted write to the entry (another writer, a write
//     without an image, Axigen's connector, one left unanswered) drops the
//     entry's image, and while one is on its way to the directory, or was
//     made while an image's write was, no image is kept: its place in the
//     directory's order is unknown.
//   - An image serves only the records whose writes it was learnt with,
//     once, and only for a short while; a retried delivery reads.
//   - Images are kept for a journal of this gateway alone (a replicated
//     journal's deliveries may run on another node) and dropped when the
//     policy changes.
//
// A change made behind the gateway's back between a write and its
// delivery is not in the image; a read would have taken it along, though
// such changes are not mirrored in their own right (resync brings them).

// imageTTL bounds how long an image may serve a delivery: deliveries
// normally follow their writes within milliseconds.
const imageTTL = 30 * time.Second

// maxImages bounds the entries with an image or a write on its way.
const maxImages = 10_000

// images is the mirror's store of account images, by canonical DN.
type images struct {
	mu sync.Mutex
	m  map[string]*imageState
}

// imageState is what images knows of one entry.
type imageState struct {
	entry *schema.Entry // nil: none kept
	csn   string
	seqs  []uint64  // the records whose writes the image holds
	at    time.Time // when the image was learnt
	// blind counts the writes to the entry on their way to the directory
	// that bring no image, pending those that bring one; epoch counts the
	// blind writes begun while the state is kept (it is kept while any
	// write is on its way).
	blind, pending, epoch int
}

func newImages() *images { return &images{m: map[string]*imageState{}} }

// imageWrite is a write images follows, from its relay to its answer.
type imageWrite struct {
	dns   []string // the canonical DNs it touches
	image bool     // it asks for an image
	epoch int      // its entry's epoch when it began (image writes)
}

// begin registers a write about to be relayed. image says whether it asks
// for an image (a modify by the service identity of an account, in a
// journal of this gateway alone); such a write while another to its entry
// is on its way without one brings none.
func (im *images) begin(dns []string, image bool) imageWrite {
	im.mu.Lock()
	defer im.mu.Unlock()
	if len(im.m) >= maxImages {
		im.pruneLocked(time.Now())
	}
	if image {
		if st := im.stateLocked(dns[0]); st.blind == 0 {
			st.pending++
			return imageWrite{dns: dns, image: true, epoch: st.epoch}
		}
	}
	for _, dn := range dns {
		st := im.stateLocked(dn)
		st.entry, st.seqs = nil, nil
		st.blind++
		st.epoch++
	}
	return imageWrite{dns: dns}
}

// end registers the directory's answer to a write begin registered; e is
// the entry a write asking for an image got back (nil: none), seq its
// record.
func (im *images) end(w imageWrite, e *schema.Entry, seq uint64) {
	im.mu.Lock()
	defer im.mu.Unlock()
	if !w.image {
		for _, dn := range w.dns {
			if st := im.m[dn]; st != nil {
				st.entry, st.seqs = nil, nil
				st.blind--
				im.tidyLocked(dn, st)
			}
		}
		return
	}
	st := im.m[w.dns[0]] // kept while the write was on its way
	st.pending--
	csn := ""
	if e != nil {
		csn, _ = e.First("entryCSN")
	}
	if csn == "" || st.blind > 0 || st.epoch != w.epoch {
		// No image, or another write came between: its order is unknown.
		st.entry, st.seqs = nil, nil
		im.tidyLocked(w.dns[0], st)
		return
	}
	if st.entry == nil || csn > st.csn {
		st.entry, st.csn, st.at = e, csn, time.Now()
	}
	st.seqs = append(st.seqs, seq)
}

// take returns, once, the image of a record's entry, when it holds the
// record's write.
func (im *images) take(rec *store.Record, dn string) *schema.Entry {
	im.mu.Lock()
	defer im.mu.Unlock()
	st := im.m[dn]
	if st == nil || st.entry == nil {
		return nil
	}
	i := slices.Index(st.seqs, rec.Seq)
	if i < 0 {
		return nil
	}
	st.seqs = slices.Delete(st.seqs, i, i+1)
	e := st.entry
	if time.Since(st.at) > imageTTL {
		st.entry, st.seqs = nil, nil
		im.tidyLocked(dn, st)
		return nil
	}
	if len(st.seqs) == 0 {
		st.entry = nil
		im.tidyLocked(dn, st)
	}
	out := schema.Entry{DN: e.DN, Attrs: maps.Clone(e.Attrs)}
	return &out
}

// forget drops the image of the entry at dn (however its DN is spelled).
// A delivery that takes later records along (store.Coverer) must deliver
// a state that holds their writes; an image learnt before one of them
// would not, so once a record is taken along, the delivery reads.
func (im *images) forget(dn string) {
	if im == nil {
		return
	}
	im.mu.Lock()
	defer im.mu.Unlock()
	if len(im.m) == 0 {
		return
	}
	for k, st := range im.m {
		if st.entry != nil && (k == dn || schema.EqualDN(k, dn)) {
			st.entry, st.seqs = nil, nil
			im.tidyLocked(k, st)
		}
	}
}

// reset drops every image (the policy changed); writes on their way are
// still counted.
func (im *images) reset() {
	im.mu.Lock()
	defer im.mu.Unlock()
	for dn, st := range im.m {
		st.entry, st.seqs = nil, nil
		im.tidyLocked(dn, st)
	}
}

func (im *images) stateLocked(dn string) *imageState {
	st := im.m[dn]
	if st == nil {
		st = &imageState{}
		im.m[dn] = st
	}
	return st
}

// tidyLocked forgets an entry nothing is known of any more.
func (im *images) tidyLocked(dn string, st *imageState) {
	if st.entry == nil && st.blind == 0 && st.pending == 0 {
		delete(im.m, dn)
	}
}

// pruneLocked drops the images past their time; when none is, every image
// (the store is a shortcut: starting over costs reads, not correctness).
// What it knows of writes on their way stays.
func (im *images) pruneLocked(now time.Time) {
	for dn, st := range im.m {
		if st.entry != nil && now.Sub(st.at) > imageTTL {
			st.entry, st.seqs = nil, nil
			im.tidyLocked(dn, st)
		}
	}
	if len(im.m) >= maxImages {
		for dn, st := range im.m {
			st.entry, st.seqs = nil, nil
			im.tidyLocked(dn, st)
		}
	}
}

// attrLists is what the write path asks of entries under one mapping,
// worked out once per mapping rather than per write.
type attrLists struct {
	mp *schema.Mapping
	// read is what classifies an entry (read before a write).
	read []string
	// readCtl is a post-read control asking for read; imageCtl one asking
	// for what delivery reads of an account (AccountAttributes, which
	// classify it too) and entryCSN, which orders the images of one entry.
	readCtl, imageCtl gateway.Control
}

func newAttrLists(mp *schema.Mapping) *attrLists {
	read := dedupFold([]string{"objectClass", mp.KeyAttribute(), mp.NameAttribute(), mp.GroupNameAttribute(), mp.MemberMailAttribute()})
	image := dedupFold(slices.Concat(mp.AccountAttributes(), []string{"entryCSN"}))
	return &attrLists{mp: mp, read: read, readCtl: postReadOf(read), imageCtl: postReadOf(image)}
}

// attrLists returns the lists of the mapping in force, worked out anew
// after a policy change (two goroutines may both do it: the lists are the
// same).
func (m *Mirror) attrLists() *attrLists {
	mp := m.mapping()
	if l := m.lists.Load(); l != nil && l.mp == mp {
		return l
	}
	l := newAttrLists(mp)
	m.lists.Store(l)
	return l
}

// postReadOf returns a post-read control asking for attrs.
func postReadOf(attrs []string) gateway.Control {
	var sel []byte
	for _, a := range attrs {
		sel = ldapwire.AppendTLV(sel, ldapwire.TagOctetString, []byte(a))
	}
	return gateway.Control{OID: oidPostRead, Value: ldapwire.AppendTLV(nil, ldapwire.TagSequence, sel), HasValue: true}
}

// wantsImage reports whether a mirrored write asks for its entry's image:
// a modify of an account by the service identity itself (whose post-read
// shows what its reads show), on a directory with the post-read control,
// with a journal of this gateway alone, and no read entry control of the
// client's own.
func (m *Mirror) wantsImage(ctx context.Context, w *write) bool {
	req := w.req
	if req.Op != gateway.OpModify || w.kind != schema.KindAccount || w.stale != nil || !w.who.sure || w.who.axigen ||
		m.cfg.Journal.Replicated() || !m.mapping().EqualDN(w.who.dn, m.cfg.Directory.cfg.ServiceDN) {
		return false
	}
	if slices.ContainsFunc(req.Controls, func(c gateway.Control) bool { return c.OID == oidPreRead || c.OID == oidPostRead }) ||
		!appendable(req) {
		return false
	}
	ok, err := m.cfg.Directory.SupportsControl(ctx, oidPostRead)
	return err == nil && ok
}

// beginRelay registers a write to an entry of the bases with the images
// as it goes to the directory.
func (m *Mirror) beginRelay(w *write) {
	if !w.scoped {
		return
	}
	dns := []string{w.target}
	if w.newDN != "" {
		dns = append(dns, w.newDN)
	}
	w.iw = m.images.begin(dns, w.image)
}

// endRelay registers the directory's answer to a write beginRelay
// registered: the image it brought, if it asked for one and succeeded.
func (m *Mirror) endRelay(w *write, res gateway.Result) {
	if !w.scoped {
		return
	}
	var e *schema.Entry
	var seq uint64
	if w.iw.image && !res.Unanswered && res.Code == 0 && w.rec != nil {
		if e = postReadEntry(res.Controls); e != nil && !m.mapping().EqualDN(e.DN, w.target) {
			e = nil // not the entry written: no image
		}
		seq = w.rec.Seq
	}
	m.images.end(w.iw, e, seq)
}

// accountImage returns, for delivery, the image of a record's entry that
// its write brought, when there is one (see images), instead of a read.
func (m *Mirror) accountImage(rec *store.Record) *schema.Entry {
	if rec.Kind != store.KindAccount || rec.Op != store.OpModify || rec.NewDN != "" {
		return nil
	}
	e := m.images.take(rec, rec.DN)
	if e == nil {
		return nil
	}
	if rec.EntryKey != "" {
		if key, err := m.entryKey(*e); err != nil || key != rec.EntryKey {
			return nil
		}
	}
	return e
}
