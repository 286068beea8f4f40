//! Log queries the index answers only in part: phrases and trace IDs.
//!
//! Segment indexes store no positions and no trace IDs: positions cost more bytes than the
//! words themselves, and trace IDs have their own index (`<id>.tid`, in the storage crate). A
//! log query is therefore a tree ([`LogQuery`]) whose leaves are either answered by tantivy
//! exactly (words, services, severities, time ranges) or resolved, index by index, into the
//! exact set of matching documents before the search runs:
//!
//! - a **phrase** (`"payment timeout"`, or any literal that splits into several words, such as
//!   `user-42`) is looked up as all of its words, and each candidate is checked against the
//!   text of its row: the words in that order and adjacent (with `~N`, each word's position
//!   may differ from where the phrase puts it by up to N in all, in either direction, as
//!   tantivy's phrase query measures it; with `*`, the last word a prefix);
//! - a **trace ID** (`trace_id:…`, or the `trace_id` filter) goes through the segment's
//!   trace-ID index; in the head, and in indexes written before this version, through the
//!   `trace_id` term.
//!
//! Every leaf is exact, so what the boolean structure, the counts and the order make of them is
//! exact too: the same answers as an index with positions (`tests.rs` compares the two).

use std::collections::HashMap;
use std::sync::Arc;

use tantivy::collector::DocSetCollector;
use tantivy::index::SegmentId;
use tantivy::query::{
    AllQuery, BooleanQuery, ConstScorer, EmptyQuery, EnableScoring, Explanation, Occur, Query, QueryParser, Scorer,
    Weight,
};
use tantivy::query_grammar::{Delimiter, Occur as GrammarOccur, UserInputAst, UserInputLeaf, UserInputLiteral};
use tantivy::tokenizer::TextAnalyzer;
use tantivy::{DocAddress, DocId, DocSet, Score, Searcher, SegmentReader, TERMINATED, TantivyError};

use crate::IndexError;

/// Largest `~N` a phrase may carry (the check tries each placement within it).
pub const MAX_SLOP: u32 = 16;
/// Most words of one phrase.
pub const MAX_PHRASE_WORDS: usize = 64;
/// Most phrase checks of one query (a bare phrase is checked in two fields: body and
/// attribute values), each looked up and checked on its own, per index.
pub const MAX_PHRASES: usize = 32;

/// Phrase checks in a tree.
pub fn phrases(node: &Node) -> usize {
    match node {
        Node::Clause(items) => items.iter().map(|(_, n)| phrases(n)).sum(),
        Node::Phrase(_) => 1,
        Node::Index(_) | Node::Trace(_) => 0,
    }
}

/// Which text of a row a phrase is checked against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Body,
    /// Any one attribute value.
    AttrValues,
    /// The value of one attribute (`attributes.http.route`: key `http.route`).
    Attribute(String),
}

/// Words that must appear in this order in one text of a row.
#[derive(Debug)]
pub struct Phrase {
    pub target: Target,
    /// (position after the first word, word), in query order.
    pub words: Vec<(usize, String)>,
    /// The last word is a prefix (`"payment tim"*`).
    pub prefix: bool,
    pub slop: u32,
    /// Every match is among these documents (all of the words but a prefix).
    pub candidates: Box<dyn Query>,
}

impl Phrase {
    /// Whether `text` holds the phrase. Every token looked at is taken from `budget`; `None`
    /// once it runs out (the check is linear in the tokens per word for an exact phrase and
    /// at most `2 × slop + 1` times that with a slop, but the text and the phrase both come
    /// from clients).
    pub fn matches(&self, analyzer: &mut TextAnalyzer, text: &str, budget: &mut u64) -> Option<bool> {
        let mut tokens: Vec<(usize, String)> = Vec::new();
        analyzer.token_stream(text).process(&mut |t| tokens.push((t.position, t.text.clone())));
        *budget = budget.checked_sub(tokens.len() as u64)?;
        let last = self.words.len() - 1;
        let word_matches = |k: usize, token: &str| {
            let w = &self.words[k].1;
            if self.prefix && k == last { token.starts_with(w.as_str()) } else { token == w }
        };
        // Dynamic programming over the words, as tantivy's phrase scorer measures slop: each
        // word's position less its place in the phrase may differ from the previous word's by
        // the slop left, in either direction. A layer holds, for each position the current
        // word can be at, the least slop spent to get there (positions ascend).
        let mut layer: Vec<(usize, u32)> =
            tokens.iter().filter(|(_, t)| word_matches(0, t)).map(|(p, _)| (*p, 0)).collect();
        for k in 1..self.words.len() {
            if layer.is_empty() {
                return Some(false);
            }
            let gap = self.words[k].0 - self.words[k - 1].0;
            let mut next: Vec<(usize, u32)> = Vec::new();
            for &(p, spent) in &layer {
                let slack = (self.slop - spent) as usize;
                let expected = p + gap;
                let from = tokens.partition_point(|t| t.0 < expected.saturating_sub(slack));
                for (q, t) in tokens[from..].iter().take_while(|t| t.0 <= expected + slack) {
                    *budget = budget.checked_sub(1)?;
                    if word_matches(k, t) {
                        next.push((*q, spent + q.abs_diff(expected) as u32));
                    }
                }
            }
            next.sort_unstable();
            next.dedup_by_key(|(q, _)| *q);
            layer = next;
        }
        Some(!layer.is_empty())
    }
}

/// A node of a parsed log query.
#[derive(Debug)]
pub enum Node {
    Clause(Vec<(Occur, Node)>),
    /// Answered by the index as it is.
    Index(Box<dyn Query>),
    Phrase(Phrase),
    /// Rows of one trace (lower-case hex).
    Trace(String),
}

/// Where the rows behind one index's documents are: what phrase checks and trace lookups read.
pub trait Rows {
    /// Calls `f(i, text)` for every text of `target` in the row of `docs[i]` (docs ascending).
    fn texts(
        &self,
        searcher: &Searcher,
        docs: &[DocAddress],
        target: &Target,
        f: &mut dyn FnMut(usize, &str),
    ) -> Result<(), IndexError>;

    /// The documents of the rows of trace `id`.
    fn trace_docs(&self, searcher: &Searcher, id: &str) -> Result<Vec<DocAddress>, IndexError>;
}

/// A parsed log query: see the module documentation.
pub struct LogQuery {
    pub root: Node,
    analyzer: TextAnalyzer,
}

impl std::fmt::Debug for LogQuery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogQuery").field("root", &self.root).finish()
    }
}

impl LogQuery {
    pub fn new(root: Node, analyzer: TextAnalyzer) -> LogQuery {
        LogQuery { root, analyzer }
    }

    /// The query for one index: phrases and traces resolved against its rows.
    pub fn compile(&self, searcher: &Searcher, rows: &dyn Rows) -> Result<Box<dyn Query>, IndexError> {
        let mut analyzer = self.analyzer.clone();
        // What the whole query requires anyway (time range, services, severities) narrows the
        // rows a phrase is checked against: on rows where it holds, the narrowed leaf is the
        // same, and elsewhere the query fails regardless.
        let required: Vec<Box<dyn Query>> = match &self.root {
            Node::Clause(items) => items
                .iter()
                .filter_map(|(o, n)| match (o, n) {
                    (Occur::Must, Node::Index(q)) => Some(q.box_clone()),
                    _ => None,
                })
                .collect(),
            _ => Vec::new(),
        };
        let mut budget = CHECK_BUDGET;
        let mut cx = Compile { searcher, rows, analyzer: &mut analyzer, required: &required, budget: &mut budget };
        compile(&self.root, &mut cx)
    }

    /// This query and every clause of `more` (all required).
    pub fn and(self, more: Vec<(Occur, Node)>) -> LogQuery {
        if more.is_empty() {
            return self;
        }
        let mut items = vec![(Occur::Must, self.root)];
        items.extend(more);
        LogQuery { root: Node::Clause(items), analyzer: self.analyzer }
    }
}

/// Tokens a query's phrase checks may look at in one index (tokenizing the candidates' text
/// and matching them): a few tens of milliseconds of work.
pub const CHECK_BUDGET: u64 = 50_000_000;

struct Compile<'a> {
    searcher: &'a Searcher,
    rows: &'a dyn Rows,
    analyzer: &'a mut TextAnalyzer,
    required: &'a [Box<dyn Query>],
    budget: &'a mut u64,
}

fn compile(node: &Node, cx: &mut Compile<'_>) -> Result<Box<dyn Query>, IndexError> {
    Ok(match node {
        Node::Index(q) => q.box_clone(),
        Node::Clause(items) => {
            let mut out = Vec::with_capacity(items.len());
            for (occur, n) in items {
                out.push((*occur, compile(n, cx)?));
            }
            Box::new(BooleanQuery::new(out))
        }
        Node::Phrase(p) => {
            let candidates: Box<dyn Query> = if cx.required.is_empty() {
                p.candidates.box_clone()
            } else {
                let mut all = vec![(Occur::Must, p.candidates.box_clone())];
                all.extend(cx.required.iter().map(|q| (Occur::Must, q.box_clone())));
                Box::new(BooleanQuery::new(all))
            };
            let mut docs: Vec<DocAddress> =
                cx.searcher.search(candidates.as_ref(), &DocSetCollector)?.into_iter().collect();
            docs.sort_unstable();
            let mut hit = vec![false; docs.len()];
            let mut exhausted = false;
            let (analyzer, budget) = (&mut *cx.analyzer, &mut *cx.budget);
            cx.rows.texts(cx.searcher, &docs, &p.target, &mut |i, text| {
                if !hit[i] && !exhausted {
                    match p.matches(analyzer, text, budget) {
                        Some(m) => hit[i] = m,
                        None => exhausted = true,
                    }
                }
            })?;
            if exhausted {
                return Err(IndexError::Invalid(format!(
                    "checking the phrases of this query against the rows that hold their words takes more than \
                     {CHECK_BUDGET} tokens in one segment; narrow the time range or the services, or add words"
                )));
            }
            Box::new(FixedDocs::new(cx.searcher, docs.into_iter().zip(hit).filter_map(|(d, h)| h.then_some(d))))
        }
        Node::Trace(id) => Box::new(FixedDocs::new(cx.searcher, cx.rows.trace_docs(cx.searcher, id)?)),
    })
}

/// Builds the [`Node`] tree of a parsed query. Literals of one word, and everything that is
/// not a literal, go to tantivy's own parser leaf by leaf (so they mean exactly what they
/// always meant); literals of several words on text fields become phrases; `trace_id`
/// literals become trace lookups. `None`: the node holds nothing to search for (a literal
/// without words), and its parent leaves it out, as tantivy's parser does.
pub fn build(parser: &QueryParser, analyzer: &TextAnalyzer, ast: UserInputAst) -> Result<Option<Node>, String> {
    match ast {
        UserInputAst::Clause(items) => {
            let mut out = Vec::with_capacity(items.len());
            for (occur, sub) in items {
                // Unmarked items take the parser's default: conjunction.
                let occur = match occur {
                    Some(GrammarOccur::Should) => Occur::Should,
                    Some(GrammarOccur::MustNot) => Occur::MustNot,
                    Some(GrammarOccur::Must) | None => Occur::Must,
                };
                if let Some(n) = build(parser, analyzer, sub)? {
                    out.push((occur, n));
                }
            }
            Ok((!out.is_empty()).then_some(Node::Clause(out)))
        }
        // Hits are ordered by time, never scored: a boost changes nothing.
        UserInputAst::Boost(inner, _) => build(parser, analyzer, *inner),
        UserInputAst::Leaf(leaf) => leaf_node(parser, analyzer, *leaf),
    }
}

/// The text targets a literal on `field` searches, or `None` when the field is not a text field.
fn targets(field: Option<&str>) -> Option<Vec<Target>> {
    match field {
        None => Some(vec![Target::Body, Target::AttrValues]),
        Some("body") => Some(vec![Target::Body]),
        Some("attr_values") => Some(vec![Target::AttrValues]),
        Some(f) => f.strip_prefix("attributes.").filter(|k| !k.is_empty()).map(|k| vec![Target::Attribute(k.into())]),
    }
}

fn leaf_node(parser: &QueryParser, analyzer: &TextAnalyzer, leaf: UserInputLeaf) -> Result<Option<Node>, String> {
    let whole = |leaf: UserInputLeaf| -> Result<Option<Node>, String> {
        let q =
            parser.build_query_from_user_input_ast(UserInputAst::Leaf(Box::new(leaf))).map_err(|e| e.to_string())?;
        // A leaf without terms (a literal of punctuation) builds to nothing to search for.
        Ok((!q.is::<EmptyQuery>()).then_some(Node::Index(q)))
    };
    match leaf {
        UserInputLeaf::Literal(lit) if lit.field_name.as_deref() == Some("trace_id") => {
            if lit.prefix || lit.slop > 0 {
                return Err("trace_id takes a whole trace ID".into());
            }
            let id = lit.phrase.trim().to_ascii_lowercase();
            Ok((!id.is_empty()).then_some(Node::Trace(id)))
        }
        UserInputLeaf::Set { field: Some(f), elements } if f == "trace_id" => {
            let ids: Vec<(Occur, Node)> = elements
                .iter()
                .map(|e| e.trim().to_ascii_lowercase())
                .filter(|e| !e.is_empty())
                .map(|id| (Occur::Should, Node::Trace(id)))
                .collect();
            Ok((!ids.is_empty()).then_some(Node::Clause(ids)))
        }
        UserInputLeaf::Range { field: Some(f), .. } | UserInputLeaf::Exists { field: f } if f == "trace_id" => {
            Err("trace_id takes a trace ID or IN [a list of them]".into())
        }
        UserInputLeaf::Literal(lit) => {
            let Some(targets) = targets(lit.field_name.as_deref()) else { return whole(UserInputLeaf::Literal(lit)) };
            let mut analyzer = analyzer.clone();
            let mut words: Vec<(usize, String)> = Vec::new();
            analyzer.token_stream(&lit.phrase).process(&mut |t| words.push((t.position, t.text.clone())));
            if words.len() <= 1 {
                return whole(UserInputLeaf::Literal(lit));
            }
            if lit.slop > MAX_SLOP {
                return Err(format!("a phrase may allow at most ~{MAX_SLOP} extra positions, not ~{}", lit.slop));
            }
            if words.len() > MAX_PHRASE_WORDS {
                return Err(format!("a phrase may have at most {MAX_PHRASE_WORDS} words, not {}", words.len()));
            }
            let first = words[0].0;
            let words: Vec<(usize, String)> = words.into_iter().map(|(p, w)| (p - first, w)).collect();
            let needed = if lit.prefix { &words[..words.len() - 1] } else { &words[..] };
            let mut phrases = Vec::with_capacity(targets.len());
            for target in targets {
                let field_name = match &target {
                    Target::Body => "body".to_string(),
                    Target::AttrValues => "attr_values".to_string(),
                    Target::Attribute(k) => format!("attributes.{k}"),
                };
                let all_words = UserInputAst::Clause(
                    needed
                        .iter()
                        .map(|(_, w)| {
                            let literal = UserInputLiteral {
                                field_name: Some(field_name.clone()),
                                phrase: w.clone(),
                                delimiter: Delimiter::None,
                                slop: 0,
                                prefix: false,
                            };
                            (Some(GrammarOccur::Must), UserInputAst::Leaf(Box::new(UserInputLeaf::Literal(literal))))
                        })
                        .collect(),
                );
                let candidates = parser.build_query_from_user_input_ast(all_words).map_err(|e| e.to_string())?;
                let phrase = Phrase { target, words: words.clone(), prefix: lit.prefix, slop: lit.slop, candidates };
                phrases.push((Occur::Should, Node::Phrase(phrase)));
            }
            Ok(Some(if phrases.len() == 1 { phrases.pop().expect("one").1 } else { Node::Clause(phrases) }))
        }
        other => whole(other),
    }
}

/// Matches nothing: the tree of a query without any word to search for.
pub fn nothing() -> Node {
    Node::Index(Box::new(EmptyQuery))
}

/// Matches everything: the tree of an empty query.
pub fn everything() -> Node {
    Node::Index(Box::new(AllQuery))
}

/// A fixed set of documents of one searcher (what a phrase check or trace lookup found).
#[derive(Clone, Debug)]
struct FixedDocs(Arc<HashMap<SegmentId, Vec<DocId>>>);

impl FixedDocs {
    fn new(searcher: &Searcher, docs: impl IntoIterator<Item = DocAddress>) -> FixedDocs {
        let mut by_segment: HashMap<SegmentId, Vec<DocId>> = HashMap::new();
        for d in docs {
            let id = searcher.segment_reader(d.segment_ord).segment_id();
            by_segment.entry(id).or_default().push(d.doc_id);
        }
        for v in by_segment.values_mut() {
            v.sort_unstable();
            v.dedup();
        }
        FixedDocs(Arc::new(by_segment))
    }
}

impl Query for FixedDocs {
    fn weight(&self, _: EnableScoring<'_>) -> tantivy::Result<Box<dyn Weight>> {
        Ok(Box::new(FixedWeight(self.0.clone())))
    }
}

struct FixedWeight(Arc<HashMap<SegmentId, Vec<DocId>>>);

impl Weight for FixedWeight {
    fn scorer(&self, reader: &SegmentReader, boost: Score) -> tantivy::Result<Box<dyn Scorer>> {
        let docs = self.0.get(&reader.segment_id()).cloned().unwrap_or_default();
        Ok(Box::new(ConstScorer::new(Docs { docs, at: 0 }, boost)))
    }

    fn explain(&self, reader: &SegmentReader, doc: DocId) -> tantivy::Result<Explanation> {
        if self.0.get(&reader.segment_id()).is_some_and(|d| d.binary_search(&doc).is_ok()) {
            Ok(Explanation::new("checked against the row", 1.0))
        } else {
            Err(TantivyError::InvalidArgument(format!("document {doc} does not match")))
        }
    }
}

/// The documents whose `trace_id` term is `id`: how indexes that keep trace-ID terms (the
/// head's, and segment indexes of earlier versions) answer a trace lookup.
pub fn trace_term_docs(searcher: &Searcher, id: &str) -> Result<Vec<DocAddress>, IndexError> {
    let field = searcher.schema().get_field("trace_id")?;
    let q = tantivy::query::TermQuery::new(
        tantivy::Term::from_field_text(field, id),
        tantivy::schema::IndexRecordOption::Basic,
    );
    Ok(searcher.search(&q, &DocSetCollector)?.into_iter().collect())
}

/// Calls `f` with every text of `target` in row `i` of `batch` (a `logs` batch, or one holding
/// at least the column the target reads: `body` or `attributes`).
pub fn texts_of_row(batch: &arrow::record_batch::RecordBatch, i: usize, target: &Target, f: &mut dyn FnMut(&str)) {
    use arrow::array::{Array, AsArray, MapArray};
    match target {
        Target::Body => {
            if let Some(b) = batch.column_by_name("body").and_then(|c| c.as_string_opt::<i32>())
                && b.is_valid(i)
            {
                f(b.value(i));
            }
        }
        Target::AttrValues | Target::Attribute(_) => {
            let Some(m) = batch.column_by_name("attributes").and_then(|c| c.as_any().downcast_ref::<MapArray>()) else {
                return;
            };
            if m.is_null(i) {
                return;
            }
            let entries = m.value(i);
            let keys = entries.column(0).as_string::<i32>();
            let values = entries.column(1).as_string::<i32>();
            for j in 0..keys.len() {
                let wanted = match target {
                    Target::Attribute(k) => keys.value(j) == k,
                    _ => true,
                };
                if wanted && values.is_valid(j) {
                    f(values.value(j));
                }
            }
        }
    }
}

/// The column a target's texts are read from.
pub fn column_of(target: &Target) -> &'static str {
    match target {
        Target::Body => "body",
        Target::AttrValues | Target::Attribute(_) => "attributes",
    }
}

/// Ascending documents as a tantivy doc set.
struct Docs {
    docs: Vec<DocId>,
    at: usize,
}

impl DocSet for Docs {
    fn advance(&mut self) -> DocId {
        self.at = (self.at + 1).min(self.docs.len());
        self.doc()
    }

    fn doc(&self) -> DocId {
        self.docs.get(self.at).copied().unwrap_or(TERMINATED)
    }

    fn seek(&mut self, target: DocId) -> DocId {
        // Docs before the cursor are behind us; find the first at or past the target after it.
        self.at += self.docs[self.at..].partition_point(|d| *d < target);
        self.doc()
    }

    fn size_hint(&self) -> u32 {
        (self.docs.len() - self.at) as u32
    }
}
