// Package ledgergen writes synthetic, valid Beancount ledgers of any size for
// tests and benchmarks. The output is deterministic for a given Options value.
package ledgergen

import (
	"bufio"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"time"
)

// Options shape a generated ledger.
type Options struct {
	// Title is the ledger's title option. Empty means no title option.
	Title string
	// Transactions is the number of transactions to write.
	Transactions int
	// Seed makes the output reproducible. Zero is a valid seed.
	Seed uint64
	// Start is the date of the first entry. Zero means 2020-01-01.
	Start time.Time
}

// Accounts are the accounts every generated ledger opens.
var Accounts = []string{
	"Assets:Bank:Checking",
	"Assets:Cash",
	"Liabilities:CreditCard",
	"Income:Salary",
	"Expenses:Food:Groceries",
	"Expenses:Food:Restaurant",
	"Expenses:Rent",
	"Expenses:Transport",
	"Equity:Opening-Balances",
}

var payees = []string{"Corner Shop", "Café Ünïcode", "Landlord", "Employer Inc", "Train Co", ""}

// Write writes a ledger to w: options, open directives, and o.Transactions
// transactions spread one per day or so, with tags, links, metadata, an
// occasional balance, note and price, and a pushtag/poptag block.
func Write(w io.Writer, o Options) error {
	bw := bufio.NewWriter(w)
	r := rand.New(rand.NewPCG(o.Seed, 0x5eed))
	start := o.Start
	if start.IsZero() {
		start = time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC)
	}
	if o.Title != "" {
		fmt.Fprintf(bw, "option \"title\" %q\n", o.Title)
	}
	fmt.Fprintf(bw, "option \"operating_currency\" \"USD\"\n\n")
	fmt.Fprintf(bw, "; Accounts\n")
	for _, a := range Accounts {
		fmt.Fprintf(bw, "%s open %s USD\n", start.Format(time.DateOnly), a)
	}
	fmt.Fprintf(bw, "\n%s commodity USD\n\n", start.Format(time.DateOnly))
	day := start
	for i := 0; i < o.Transactions; i++ {
		if i%3 == 0 {
			day = day.AddDate(0, 0, 1)
		}
		date := day.Format(time.DateOnly)
		if i == o.Transactions/2 {
			fmt.Fprintf(bw, "pushtag #generated\n\n")
		}
		payee := payees[r.IntN(len(payees))]
		flag := "*"
		if r.IntN(10) == 0 {
			flag = "!"
		}
		cents := 100 + r.IntN(20000)
		expense := Accounts[4+r.IntN(4)]
		source := Accounts[r.IntN(3)]
		fmt.Fprintf(bw, "%s %s", date, flag)
		if payee != "" {
			fmt.Fprintf(bw, " %q", payee)
		}
		fmt.Fprintf(bw, " \"Purchase %d\"", i)
		if r.IntN(4) == 0 {
			fmt.Fprintf(bw, " #tag-%d", r.IntN(5))
		}
		if r.IntN(5) == 0 {
			fmt.Fprintf(bw, " ^gen-%d", i)
		}
		fmt.Fprintf(bw, "\n")
		if r.IntN(6) == 0 {
			fmt.Fprintf(bw, "  receipt: \"r-%d\"\n", i)
		}
		fmt.Fprintf(bw, "  %-50s %9d.%02d USD\n", expense, cents/100, cents%100)
		fmt.Fprintf(bw, "  %s\n\n", source)
		if i == min(o.Transactions/2+10, o.Transactions-1) {
			fmt.Fprintf(bw, "poptag #generated\n\n")
		}
		switch {
		case i%500 == 250:
			fmt.Fprintf(bw, "%s note Assets:Cash \"counted the cash box\"\n\n", date)
		case i%500 == 400:
			fmt.Fprintf(bw, "%s price EUR 1.%02d USD\n\n", date, r.IntN(100))
		}
	}
	return bw.Flush()
}

// File writes a ledger to path (created or truncated).
func File(path string, o Options) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := Write(f, o); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
