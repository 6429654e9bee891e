//! `snapshot-pause`: how long the matcher's book thread stops matching to take a snapshot — the
//! logical images of its books ([`matcher::Book::image`]), which it then hands to another thread
//! to encode and write — against the number of open orders, with every book's duplicate window
//! full (the worst case: the window is imaged too). Also the encoding time, which the writer
//! thread pays, not matching.
//!
//! Flags: `--open 1000,10000,100000` (resting orders, spread over the books), `--books N` (3, the
//! default symbol table's), `--levels N` (price levels per side per book, 200), `--runs N` (9:
//! the median and the worst are printed).

use std::time::{Duration, Instant};

use common::{Account, ClientOrderId, Command, CommandKind, NewOrder, OrderId, OrderType, Price, Qty, Side};
use common::{SymbolId, SymbolTable, TimeInForce, Timestamp};
use matcher::snapshot::{self, Snapshot};
use matcher::{Capacity, Engine};
use perf::flag;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--help" || a == "-h") {
        println!("snapshot-pause [--open 1000,10000,100000] [--books 3] [--levels 200] [--runs 9]");
        return;
    }
    let parse = |name: &str, default: &str| -> Vec<usize> {
        flag(&args, name, default)
            .split(',')
            .map(|v| {
                v.trim()
                    .replace('_', "")
                    .parse()
                    .unwrap_or_else(|_| die(&format!("{name}: not a number: {v}")))
            })
            .collect()
    };
    let opens = parse("--open", "1000,10000,100000");
    let books = parse("--books", "3")[0].max(1);
    let levels = parse("--levels", "200")[0].max(1);
    let runs = parse("--runs", "9")[0].max(1);
    let table = SymbolTable::default();
    let books = books.min(table.len());
    let capacity = Capacity::default();

    println!("# snapshot-pause: the book thread's pause to image its books for a snapshot");
    println!();
    println!(
        "{books} books, each with its duplicate window full ({} ended client ids), resting orders spread over \
         {levels} levels a side; {runs} runs each",
        capacity.client_window
    );
    println!();
    println!("| open orders | pause, median (ms) | pause, worst (ms) | encode, median (ms) | file (bytes) |");
    println!("|---:|---:|---:|---:|---:|");
    for &open in &opens {
        let engine = build(&table, capacity, books, open, levels);
        let mut pauses = Vec::new();
        let mut encodes = Vec::new();
        let mut bytes = 0;
        for _ in 0..runs {
            let started = Instant::now();
            let images: Vec<(i32, matcher::BookImage)> =
                engine.books().iter().map(|b| (0, b.image())).collect();
            pauses.push(started.elapsed());
            let snap = Snapshot { offsets: vec![(0, 1)], books: images, extra: Vec::new() };
            let started = Instant::now();
            bytes = snapshot::encode(&snap).len();
            encodes.push(started.elapsed());
        }
        pauses.sort();
        encodes.sort();
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        println!(
            "| {open} | {:.2} | {:.2} | {:.2} | {bytes} |",
            ms(pauses[pauses.len() / 2]),
            ms(pauses[pauses.len() - 1]),
            ms(encodes[encodes.len() / 2])
        );
    }
}

fn die(msg: &str) -> ! {
    eprintln!("snapshot-pause: {msg}");
    std::process::exit(2)
}

/// `books` books, each with a full duplicate window and `open / books` resting orders.
fn build(table: &SymbolTable, capacity: Capacity, books: usize, open: usize, levels: usize) -> Engine {
    let mut engine = Engine::new(table, capacity);
    let mut out = Vec::new();
    let mut offset = 0u64;
    let mut send = |engine: &mut Engine, kind: CommandKind| {
        offset += 1;
        let id = OrderId::new(0, offset).expect("offset fits");
        out.clear();
        engine.apply(&Command { id, ts: Timestamp(offset), kind }, &mut out);
        id
    };
    for b in 0..books {
        let symbol = SymbolId(b as u32);
        let spec = table.get(symbol).expect("symbol");
        let reference = spec.reference.0;
        // Inside the band (a limit price outside it is refused).
        let band = (reference * i64::from(spec.band_bps) / 10_000 - 1).max(1);
        let order = |side, price: i64, account: &str, cid: String| NewOrder {
            symbol,
            account: Account::new(account).expect("account"),
            client_order_id: ClientOrderId::new(&cid).expect("client id"),
            side,
            order_type: OrderType::Limit,
            tif: TimeInForce::Ioc,
            post_only: false,
            price: Some(Price(price)),
            qty: Qty(1),
        };
        // Fill the window: IOC orders that find nothing end at once (their ids stay remembered).
        for i in 0..capacity.client_window {
            send(&mut engine, CommandKind::New(order(Side::Buy, reference - 1, "w", format!("w{i}"))));
        }
        // The open orders: GTC, on both sides, `levels` prices a side.
        for i in 0..open / books {
            let side = if i % 2 == 0 { Side::Buy } else { Side::Sell };
            let step = (i / 2 % levels) as i64 % band + 1;
            let price = if side == Side::Buy { reference - step } else { reference + step };
            let o = NewOrder {
                tif: TimeInForce::Gtc,
                ..order(side, price, &format!("a{}", i % 8), format!("o{i}"))
            };
            send(&mut engine, CommandKind::New(o));
        }
    }
    assert!(engine.resting_orders() >= open - books, "the book refused orders: {}", engine.resting_orders());
    engine
}
