//! The small glob dialect of policy files.
//!
//! `*` matches any run of characters (dots included), `?` exactly one
//! character; everything else matches itself. There is no escaping and no
//! character classes: `[`, `]`, `{`, `}` and `\` are reserved so they can be
//! given a meaning later without changing what existing files mean.
//! Matching is case-sensitive unless the glob was compiled with
//! [`Glob::new_ascii_case_insensitive`] (used for SQL command keywords).

/// Why a pattern was rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum GlobError {
    Empty,
    Reserved(char),
}

impl std::fmt::Display for GlobError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GlobError::Empty => f.write_str("empty pattern matches nothing"),
            GlobError::Reserved(c) => write!(
                f,
                "`{c}` is reserved in patterns (only `*` and `?` are wildcards)"
            ),
        }
    }
}

/// A compiled pattern.
#[derive(Debug, Clone)]
pub(crate) struct Glob {
    source: Box<str>,
    kind: Kind,
    fold_case: bool,
}

#[derive(Debug, Clone)]
enum Kind {
    /// `*`.
    Any,
    /// No wildcards.
    Exact(Box<str>),
    /// `literal*`.
    Prefix(Box<str>),
    /// `*literal`.
    Suffix(Box<str>),
    /// Anything else.
    General,
}

fn has_wildcard(s: &str) -> bool {
    s.bytes().any(|b| b == b'*' || b == b'?')
}

impl Glob {
    /// Compiles a case-sensitive pattern.
    pub(crate) fn new(pattern: &str) -> Result<Glob, GlobError> {
        Glob::compile(pattern, false)
    }

    /// Compiles a pattern that ignores ASCII case.
    pub(crate) fn new_ascii_case_insensitive(pattern: &str) -> Result<Glob, GlobError> {
        Glob::compile(pattern, true)
    }

    fn compile(pattern: &str, fold_case: bool) -> Result<Glob, GlobError> {
        if pattern.is_empty() {
            return Err(GlobError::Empty);
        }
        if let Some(c) = pattern
            .chars()
            .find(|c| matches!(c, '[' | ']' | '{' | '}' | '\\'))
        {
            return Err(GlobError::Reserved(c));
        }
        let kind = if pattern.bytes().all(|b| b == b'*') {
            Kind::Any
        } else if !has_wildcard(pattern) {
            Kind::Exact(pattern.into())
        } else if let Some(lit) = pattern.strip_suffix('*').filter(|l| !has_wildcard(l)) {
            Kind::Prefix(lit.into())
        } else if let Some(lit) = pattern.strip_prefix('*').filter(|l| !has_wildcard(l)) {
            Kind::Suffix(lit.into())
        } else {
            Kind::General
        };
        Ok(Glob {
            source: pattern.into(),
            kind,
            fold_case,
        })
    }

    /// Whether the pattern is `*` (matches everything).
    pub(crate) fn is_any(&self) -> bool {
        matches!(self.kind, Kind::Any)
    }

    fn eq(&self, a: &[u8], b: &[u8]) -> bool {
        if self.fold_case {
            a.eq_ignore_ascii_case(b)
        } else {
            a == b
        }
    }

    /// Whether the pattern matches all of `text`.
    pub(crate) fn matches(&self, text: &str) -> bool {
        let t = text.as_bytes();
        match &self.kind {
            Kind::Any => true,
            Kind::Exact(lit) => self.eq(lit.as_bytes(), t),
            Kind::Prefix(lit) => t.len() >= lit.len() && self.eq(lit.as_bytes(), &t[..lit.len()]),
            Kind::Suffix(lit) => {
                t.len() >= lit.len() && self.eq(lit.as_bytes(), &t[t.len() - lit.len()..])
            }
            Kind::General => self.general(t),
        }
    }

    /// Wildcard matching with backtracking to the last `*`: O(len(text) *
    /// len(pattern)) at worst, no allocation. Works on bytes; `?` consumes
    /// one whole UTF-8 character. Literal runs start and end on character
    /// boundaries because the pattern is valid UTF-8 too.
    fn general(&self, t: &[u8]) -> bool {
        let p = self.source.as_bytes();
        let (mut pi, mut ti) = (0usize, 0usize);
        let mut star: Option<usize> = None;
        let mut mark = 0usize;
        while ti < t.len() {
            if pi < p.len() && p[pi] == b'?' {
                pi += 1;
                ti = (ti + char_len(t[ti])).min(t.len());
            } else if pi < p.len() && p[pi] == b'*' {
                star = Some(pi);
                pi += 1;
                mark = ti;
            } else if pi < p.len() && self.eq(&p[pi..=pi], &t[ti..=ti]) {
                pi += 1;
                ti += 1;
            } else if let Some(sp) = star {
                pi = sp + 1;
                mark = (mark + char_len(t[mark])).min(t.len());
                ti = mark;
            } else {
                return false;
            }
        }
        p[pi..].iter().all(|&b| b == b'*')
    }

    /// Whether the pattern matches `prefix` followed by some non-empty
    /// string: used to decide whether a `schema.table.*` reference (every
    /// column of a table) can expose a column the pattern names.
    pub(crate) fn matches_some_extension_of(&self, prefix: &str) -> bool {
        let (t, n) = (prefix.as_bytes(), prefix.len());
        match &self.kind {
            Kind::Any => return true,
            // Some X with lit == prefix + X, X non-empty.
            Kind::Exact(lit) => {
                let lit = lit.as_bytes();
                return lit.len() > n && self.eq(&lit[..n], t);
            }
            // prefix + X starts with lit: X can complete lit, or anything.
            Kind::Prefix(lit) => {
                let lit = lit.as_bytes();
                let k = lit.len().min(n);
                return self.eq(&lit[..k], &t[..k]);
            }
            // X = lit.
            Kind::Suffix(_) => return true,
            Kind::General => {}
        }
        // A set-of-positions simulation over the pattern's characters.
        let pat: Vec<char> = self.source.chars().collect();
        let mut live = vec![false; pat.len() + 1];
        let mut next = vec![false; pat.len() + 1];
        live[0] = true;
        close(&pat, &mut live);
        for c in prefix.chars() {
            next.iter_mut().for_each(|s| *s = false);
            for i in 0..pat.len() {
                if !live[i] {
                    continue;
                }
                match pat[i] {
                    '*' => next[i] = true,
                    '?' => next[i + 1] = true,
                    l if l == c || (self.fold_case && l.eq_ignore_ascii_case(&c)) => {
                        next[i + 1] = true
                    }
                    _ => {}
                }
            }
            close(&pat, &mut next);
            std::mem::swap(&mut live, &mut next);
        }
        // Any remaining non-empty pattern can produce a non-empty string.
        live[..pat.len()].iter().any(|&s| s)
    }
}

/// Epsilon closure: a live `*` may also match nothing.
fn close(pat: &[char], live: &mut [bool]) {
    for i in 0..pat.len() {
        if live[i] && pat[i] == '*' {
            live[i + 1] = true;
        }
    }
}

fn char_len(lead: u8) -> usize {
    match lead {
        0x00..=0x7f => 1,
        0xc0..=0xdf => 2,
        0xe0..=0xef => 3,
        0xf0..=0xff => 4,
        _ => 1, // continuation byte: cannot happen at a boundary
    }
}

/// A list of globs: matches when any of them does.
#[derive(Debug, Clone)]
pub(crate) struct GlobList {
    globs: Box<[Glob]>,
    any: bool,
}

impl GlobList {
    pub(crate) fn new(globs: Vec<Glob>) -> GlobList {
        let any = globs.iter().any(Glob::is_any);
        GlobList {
            globs: globs.into_boxed_slice(),
            any,
        }
    }

    /// Whether some glob matches `text`.
    #[inline]
    pub(crate) fn matches(&self, text: &str) -> bool {
        self.any || self.globs.iter().any(|g| g.matches(text))
    }

    /// Whether some glob matches `prefix` + some non-empty string.
    pub(crate) fn matches_some_extension_of(&self, prefix: &str) -> bool {
        self.any
            || self
                .globs
                .iter()
                .any(|g| g.matches_some_extension_of(prefix))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(p: &str, t: &str) -> bool {
        Glob::new(p).unwrap().matches(t)
    }

    /// Reference implementation: plain recursion over characters.
    fn reference(p: &[char], t: &[char]) -> bool {
        match p.split_first() {
            None => t.is_empty(),
            Some(('*', rest)) => (0..=t.len()).any(|i| reference(rest, &t[i..])),
            Some(('?', rest)) => !t.is_empty() && reference(rest, &t[1..]),
            Some((c, rest)) => t.first() == Some(c) && reference(rest, &t[1..]),
        }
    }

    #[test]
    fn basics() {
        assert!(m("*", ""));
        assert!(m("*", "public.orders"));
        assert!(m("public.orders", "public.orders"));
        assert!(!m("public.orders", "public.orders2"));
        assert!(!m("public.orders", "Public.orders"));
        assert!(m("public.order_*", "public.order_items"));
        assert!(m("public.order_*", "public.order_"));
        assert!(!m("public.order_*", "public.orders"));
        assert!(m("*.orders", "sales.orders"));
        assert!(m("*.orders", "a.b.orders"));
        assert!(m("agent-?", "agent-7"));
        assert!(!m("agent-?", "agent-77"));
        assert!(m("agent-?", "agent-é"));
        assert!(m("*.customers.*", "public.customers.ssn"));
        assert!(m("p*c.*s.s?n", "public.customers.ssn"));
        assert!(!m("p*c.*s.s?n", "public.customers.sn"));
        assert!(m("a*b*c", "abc"));
        assert!(m("a*b*c", "aXbYbZc"));
        assert!(!m("a*b*c", "aXbYbZ"));
        assert!(m("**", "x"));
    }

    #[test]
    fn case_folding() {
        let g = Glob::new_ascii_case_insensitive("delete").unwrap();
        assert!(g.matches("DELETE"));
        assert!(g.matches("Delete"));
        let g = Glob::new_ascii_case_insensitive("create *").unwrap();
        assert!(g.matches("CREATE TABLE"));
        assert!(!g.matches("CREATED"));
    }

    #[test]
    fn rejected() {
        assert_eq!(Glob::new("").unwrap_err(), GlobError::Empty);
        assert_eq!(Glob::new("a[bc]").unwrap_err(), GlobError::Reserved('['));
        assert_eq!(Glob::new("a\\*").unwrap_err(), GlobError::Reserved('\\'));
        assert_eq!(Glob::new("{a,b}").unwrap_err(), GlobError::Reserved('{'));
    }

    #[test]
    fn extensions() {
        let e = |p: &str, pre: &str| Glob::new(p).unwrap().matches_some_extension_of(pre);
        assert!(e("public.customers.ssn", "public.customers."));
        assert!(!e("public.customers.ssn", "public.orders."));
        assert!(!e("public.customers.", "public.customers."));
        assert!(e("*.ssn", "public.orders."));
        assert!(e("public.customers.*", "public.customers."));
        assert!(e("public.cust*", "public.customers."));
        assert!(!e("public.orders*", "public.customers."));
        assert!(e("public.?ustomers.s*", "public.customers."));
        assert!(e("*", "x."));
    }

    /// Every word up to `len` characters over `alphabet`.
    fn words(alphabet: &[char], len: usize) -> Vec<String> {
        let mut all = vec![String::new()];
        let mut frontier = all.clone();
        for _ in 0..len {
            let next: Vec<String> = frontier
                .iter()
                .flat_map(|w| {
                    alphabet.iter().map(move |c| {
                        let mut n = w.clone();
                        n.push(*c);
                        n
                    })
                })
                .collect();
            all.extend(next.iter().cloned());
            frontier = next;
        }
        all
    }

    #[test]
    fn agrees_with_reference() {
        let patterns = words(&['a', 'b', '.', '*', '?', 'é'], 4);
        let texts = words(&['a', 'b', '.', 'é'], 4);
        for p in patterns.iter().filter(|w| !w.is_empty()) {
            let g = Glob::new(p).unwrap();
            let pc: Vec<char> = p.chars().collect();
            for t in &texts {
                let tc: Vec<char> = t.chars().collect();
                assert_eq!(g.matches(t), reference(&pc, &tc), "{p:?} vs {t:?}");
            }
        }
    }

    #[test]
    fn extensions_agree_with_reference() {
        let patterns = words(&['a', 'b', '.', '*', '?', 'é'], 3);
        let texts = words(&['a', 'b', '.', 'é'], 3);
        let exts: Vec<Vec<char>> = texts
            .iter()
            .filter(|t| !t.is_empty())
            .map(|t| t.chars().collect())
            .collect();
        for p in patterns.iter().filter(|w| !w.is_empty()) {
            let g = Glob::new(p).unwrap();
            let pc: Vec<char> = p.chars().collect();
            for t in &texts {
                let tc: Vec<char> = t.chars().collect();
                let expected = exts
                    .iter()
                    .any(|x| reference(&pc, &[tc.as_slice(), x.as_slice()].concat()));
                assert_eq!(g.matches_some_extension_of(t), expected, "{p:?} ext {t:?}");
            }
        }
    }
}
