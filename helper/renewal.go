package helper

import "time"

// PastRenewal reports whether now is past 3/4 of the validity of a
// certificate valid from notBefore to notAfter. meshid renews at about
// half of an SVID's life, so a holder still on it by then has seen
// rotation stall: meshid stopped renewing, or the holder stopped
// listening.
func PastRenewal(notBefore, notAfter, now time.Time) bool {
	life := notAfter.Sub(notBefore)
	return !now.Before(notBefore.Add(life / 4 * 3))
}
