// Package ledger is favaproxy's write path: everything it keeps for one
// ledger and every rule by which a write reaches Fava. The HTTP server (package
// proxy) builds a Request from a client's request and calls Ledger.Write, whose
// answer it sends back; reads take the ledger's shared lock with Ledger.RLock.
//
// A Ledger is opened with Open, which reads the ledger's files into its index
// and opens its journal (failing loudly if either cannot be done), and closed
// with Close, which refuses new writes, waits for those in progress and closes
// the journal.
//
// # The path of a write
//
// Write checks the paths the write names and, for add_entries, parses and
// validates its body (400 otherwise; see Paths below), then waits its turn and
// runs the handler of its kind (newHandlers, the one table of Fava's routes):
//
//	Write → checkWrite, prepareAdd → run → handler → send (fava.Client) → back
//
// # Lock order
//
// A write takes its user's lock, then the ledger's lock, never the reverse
// (run, then the handler through underLock, withRetries or the group commit).
// Both waits together are bounded by lock_timeout. The ledger's lock is a
// Locker: in process (NewRWLock), across processes (package lock: a lock
// file) or across hosts (package lock: etcd). A Locker that can lose its hold
// (a LossReporter, such as a lease) is asked, and one that can confirm its
// hold (a Verifier) confirms it, immediately before every request sent to
// Fava and every file put back (verifyHold): once the hold is lost nothing
// more is sent, and a write in flight is left to the next holder to settle.
// Journal records are appended while the ledger lock is held, with the hold's
// fencing token when the Locker is a Fencer.
//
// # Retries
//
// withRetries is the one place that decides whether a write is tried again:
// only connections to Fava that failed before the request was sent, and edits
// favaproxy re-derives after an outside writer (one that does not take the
// ledger lock) changed the file between favaproxy's read and its write. It
// never sleeps holding the ledger lock.
//
// # What a write changed
//
// Every decision that depends on whether a write changed the ledger — the
// audit trail, and whether a refused add_entries batch may be resent request
// by request — compares two snapshots of the checksums of all of the ledger's
// files (the main file and every include), taken holding the lock.
//
// # add_entries
//
// Before any lock, the body is parsed and validated against Beancount's
// grammar (400 naming the field otherwise), the idempotency key is parsed
// (400 when it cannot be a link), the request's fingerprint is computed on
// the entries as sent, and the key is added to the entries (a link on
// transactions, metadata on balances and notes). A key this process is
// already handling is answered 409 with Retry-After: 1.
//
// Then the request joins its ledger's group commit (see group): whoever
// holds the ledger lock next takes every queued add_entries request (up to
// batch.max_requests and batch.max_bytes, in arrival order; one when
// batch.disabled) and, under the lock:
//
//  1. refreshes the ledger's index and answers the keyed requests whose key
//     is already known (see Idempotency keys) without writing them;
//  2. sends the entries of all the others to Fava as one add_entries call,
//     in arrival order (with the headers of the first request);
//  3. on success answers each request "Stored N entries." with its own N,
//     in Fava's wire style and status; when Fava refuses a batch of several
//     requests and the ledger is unchanged, retries each request alone, so
//     that one bad request fails alone and each gets the answer Fava gives
//     it; when the outcome is not known (Fava did not answer in time, the
//     connection broke, Fava crashed) nothing is resent: keyed requests are
//     answered from what the ledger now holds (written, not written: the
//     error, or partly written: 409), requests without a key get 502 or 504
//     (or, alone, Fava's own answer);
//  4. appends one journal record per request before any answer is sent,
//     the records of one upstream call with one write and one fsync.
//
// Requests without a key are handled the same way, without the lookups.
//
// # Idempotency keys
//
// A client that sends an idempotency key gets exactly one copy of its
// entries in the ledger however often it retries. The ledger itself is the
// record: every Transaction of the request carries the link ^<prefix><key>
// and every Balance and Note the metadata <meta_key>: "<prefix><key>". Under
// the ledger lock, before anything is written, the key is looked up in the
// ledger's index (all included files) and in the ledger's journal:
//
//   - in the journal with an ok record: the first such record's reply is
//     replayed (its status and body, plus Idempotent-Replayed: true), after
//     checking that the same user sent the same request (fingerprint), else
//     422; when the ledger holds fewer entries with the key than the
//     record says were sent (a crash in the middle of Fava's one-by-one
//     writes, or a hand edit), 409 with both counts instead;
//   - in the ledger but not in the journal (written by another tool, or a
//     journal that was lost): replayed as a success in Fava's style,
//     "Stored N entries." with the N found, without a fingerprint check —
//     there is nothing to compare with;
//   - in neither: the request is written.
//
// A key still being processed by this process is answered 409 with
// Retry-After at once; across processes the ledger lock orders the
// requests and the later one finds the key. A keyed request whose outcome
// is unknown (Fava did not answer and the key was not in the ledger after)
// is recorded as OutcomeUnknown; retries of its key are answered 503 until
// timeouts.upstream has passed since, after which the attempt is taken as
// lost and the key is written.
//
// # Paths
//
// Paths a client names are checked before any lock is taken, so that a
// request that names a file outside the ledger never reaches Fava:
//
//   - GET source ?filename= must be empty (the main file) or one of the
//     ledger's files: the main file and what it includes, compared after
//     symlinks are evaluated.
//   - Document writes stay inside the ledger's documents folders (its
//     "documents" options, relative to the main file's directory): the
//     filename of attach_document, move and DELETE document, move's new
//     location and add_document's folder. Documents that Fava would also
//     accept from its import-dirs, or from document directives pointing
//     elsewhere, are refused.
//
// The ledger's files are listed afresh at each check: the ledger's index is
// refreshed, which re-runs include discovery as Beancount does it and reads
// again only the files that changed, so includes added while favaproxy runs
// count at once.
package ledger
