//! Behaviour of the built-in policies and the engine on small hand-made clusters.

use crate::cluster::{Cluster, Container, Node, PowerModel};
use crate::cost::CostModel;
use crate::engine::{Engine, EngineConfig};
use crate::plan::{Explanation, IdleNode, Move, Plan};
use crate::spec::parse_policy;

const GIB: u64 = 1 << 30;

fn node(name: &str, cores: f64) -> Node {
    Node { name: name.into(), cpu_cores: cores, memory_bytes: 64 * GIB, power: PowerModel::linear(100.0, 300.0) }
}

fn ct(name: &str, node: usize, cpu: &[f64], mem_gib: u64) -> Container {
    Container {
        name: name.into(),
        node,
        cpu: cpu.to_vec(),
        memory_bytes: mem_gib * GIB,
        dirty_bytes_per_sec: 0.0,
        forecast: Default::default(),
        pinned: false,
    }
}

fn cluster(containers: Vec<Container>) -> Cluster {
    Cluster { nodes: vec![node("a", 8.0), node("b", 8.0), node("c", 8.0)], containers, sample_secs: 60.0 }
}

#[test]
fn a_hot_node_is_relieved_by_the_cheapest_relief() {
    // a: 7.5 of 8 cores for five samples; b and c light.
    let c = cluster(vec![
        ct("big", 0, &[4.0; 5], 4),
        ct("small", 0, &[3.5; 5], 1),
        ct("x", 1, &[1.0; 5], 1),
        ct("y", 2, &[2.0; 5], 1),
    ]);
    let plan = parse_policy("hotspot").unwrap().plan(&c, &CostModel::default());
    assert_eq!(plan.moves.len(), 1, "{plan:#?}");
    let m = &plan.moves[0];
    // Either container brings a under 75 %; the 1 GiB one costs less to move.
    assert_eq!((m.container.as_str(), m.from.as_str(), m.to.as_str()), ("small", "a", "b"));
    assert!(m.reason.predicted_gain > 1.4 && m.reason.estimated_cost.transfer_secs > 0.0);
    assert!(m.reason.figures.iter().any(|f| f.name == "hot_samples" && f.value == 5.0));
}

#[test]
fn a_short_spike_is_not_a_hot_spot() {
    // Hot in only 2 of the last 5 samples: k=3 is not reached.
    let c = cluster(vec![
        ct("a1", 0, &[0.5, 0.5, 0.5, 3.5, 3.5], 1),
        ct("a2", 0, &[0.5, 0.5, 0.5, 4.0, 4.0], 1),
        ct("b1", 1, &[1.0; 5], 1),
    ]);
    assert!(parse_policy("hotspot").unwrap().plan(&c, &CostModel::default()).moves.is_empty());
    assert_eq!(parse_policy("hotspot:k=2").unwrap().plan(&c, &CostModel::default()).moves.len(), 1);
}

#[test]
fn hysteresis_stops_ping_pong() {
    // Two nodes; one container whose load alternates which node is hot: without the engine's
    // memory it would be sent back and forth.
    let mut c = Cluster {
        nodes: vec![node("a", 8.0), node("b", 8.0)],
        containers: vec![ct("mover", 0, &[3.0; 5], 1), ct("a_base", 0, &[4.0; 5], 1), ct("b_base", 1, &[1.0; 5], 1)],
        sample_secs: 60.0,
    };
    let config = EngineConfig { max_concurrent: 4, cooldown_secs: 600.0, hysteresis_secs: 7200.0 };
    let mut engine = Engine::new(parse_policy("hotspot:k=1,n=1").unwrap(), CostModel::default(), config);
    let mut moves = 0;
    for step in 0..20 {
        let now = step as f64 * 300.0;
        // Whichever node holds `mover` gets its base load raised to make it hot.
        let on = c.containers[0].node;
        c.containers[1] = ct("a_base", 0, &[if on == 0 { 4.0 } else { 1.0 }; 5], 1);
        c.containers[2] = ct("b_base", 1, &[if on == 1 { 4.0 } else { 1.0 }; 5], 1);
        let plan = engine.evaluate(now, &c, 0);
        for m in &plan.moves {
            moves += 1;
            let i = c.containers.iter().position(|x| x.name == m.container).unwrap();
            c.containers[i].node = c.nodes.iter().position(|n| n.name == m.to).unwrap();
        }
        if step > 2 {
            assert!(plan.moves.is_empty(), "step {step}: {plan:#?}");
            assert!(plan.deferred.iter().all(|(_, why)| why.starts_with("hysteresis") || why.starts_with("cool-down")));
        }
    }
    assert_eq!(moves, 1);
    // The same without hysteresis ping-pongs.
    let config = EngineConfig { max_concurrent: 4, cooldown_secs: 0.0, hysteresis_secs: 0.0 };
    let mut engine = Engine::new(parse_policy("hotspot:k=1,n=1").unwrap(), CostModel::default(), config);
    c.containers[0].node = 0;
    let mut moves = 0;
    for step in 0..6 {
        let on = c.containers[0].node;
        c.containers[1] = ct("a_base", 0, &[if on == 0 { 4.0 } else { 1.0 }; 5], 1);
        c.containers[2] = ct("b_base", 1, &[if on == 1 { 4.0 } else { 1.0 }; 5], 1);
        for m in engine.evaluate(step as f64 * 300.0, &c, 0).moves {
            moves += 1;
            c.containers[0].node = if m.to == "a" { 0 } else { 1 };
        }
    }
    assert!(moves >= 5, "{moves}");
}

/// Containers that share a network namespace or a volume with others cannot move: no policy
/// plans their move, and a node holding one is not emptied; their load still counts.
#[test]
fn pinned_containers_are_never_moved() {
    let pin = |mut c: Container| {
        c.pinned = true;
        c
    };
    // a is hot; the cheaper relief is pinned, so the other one goes.
    let c = cluster(vec![
        ct("big", 0, &[4.0; 5], 4),
        pin(ct("small", 0, &[3.5; 5], 1)),
        ct("x", 1, &[1.0; 5], 1),
        ct("y", 2, &[2.0; 5], 1),
    ]);
    for spec in ["hotspot", "balance", "forecast:horizon=2m,threshold=0.75,k=1,n=1"] {
        let plan = parse_policy(spec).unwrap().plan(&c, &CostModel::default());
        assert!(plan.moves.iter().all(|m| m.container != "small"), "{spec}: {plan:#?}");
    }
    let plan = parse_policy("hotspot").unwrap().plan(&c, &CostModel::default());
    assert_eq!(plan.moves.iter().map(|m| m.container.as_str()).collect::<Vec<_>>(), ["big"]);
    // Everything on a pinned: a stays hot.
    let all = cluster(vec![pin(ct("big", 0, &[4.0; 5], 4)), pin(ct("small", 0, &[3.5; 5], 1))]);
    for spec in ["hotspot", "balance", "forecast:horizon=2m,threshold=0.75,k=1,n=1", "consolidate"] {
        assert!(parse_policy(spec).unwrap().plan(&all, &CostModel::default()).moves.is_empty(), "{spec}");
    }
    // consolidate leaves a node with a pinned container alone.
    let light = cluster(vec![ct("a1", 0, &[2.0; 5], 1), pin(ct("b1", 1, &[1.5; 5], 1)), ct("c1", 2, &[0.5; 5], 1)]);
    let plan = parse_policy("consolidate").unwrap().plan(&light, &CostModel::default());
    assert!(plan.moves.iter().all(|m| m.from != "b"), "{plan:#?}");
}

#[test]
fn consolidate_empties_the_node_saving_most_per_migration_and_reports_watts() {
    let c = cluster(vec![
        ct("a1", 0, &[2.0; 5], 1),
        ct("b1", 1, &[1.5; 5], 1),
        ct("c1", 2, &[0.5; 5], 1),
        ct("c2", 2, &[0.3; 5], 1),
    ]);
    let plan = parse_policy("consolidate").unwrap().plan(&c, &CostModel::default());
    assert_eq!(plan.idle_nodes.len(), 1, "{plan:#?}");
    // Same power model everywhere: emptying b or c saves the same idle watts, b in one move.
    assert_eq!(plan.idle_nodes[0].node, "b");
    // b draws 100 + 200 * 1.5 / 8 = 137.5 W; its 1.5 cores add 200 * 1.5 / 8 = 37.5 W on a.
    assert!((plan.idle_nodes[0].watts_saved - 100.0).abs() < 1e-6, "{plan:#?}");
    assert_eq!(plan.moves.len(), 1);
    assert!(plan.moves.iter().all(|m| m.from == "b" && m.to == "a"));
    // If the engine would not let b1 onto a (hysteresis, say), it goes to c instead.
    let policy = parse_policy("consolidate").unwrap();
    let plan = policy.plan_within(&c, &CostModel::default(), &|ct, to| !(ct == "b1" && to == "a"));
    assert_eq!(plan.idle_nodes[0].node, "b", "{plan:#?}");
    assert_eq!(plan.moves[0].to, "c", "{plan:#?}");
    // Under high load nothing is packed.
    let busy = cluster(vec![ct("a1", 0, &[5.0; 5], 1), ct("b1", 1, &[5.0; 5], 1), ct("c1", 2, &[5.0; 5], 1)]);
    assert!(parse_policy("consolidate").unwrap().plan(&busy, &CostModel::default()).moves.is_empty());
}

#[test]
fn consolidate_empties_the_least_efficient_node_onto_the_most_efficient() {
    // old: 4 cores, 200-250 W (idle 80 % of peak), 20 W in standby; a and b: 8 cores, 100-300 W.
    let old = Node {
        name: "old".into(),
        cpu_cores: 4.0,
        memory_bytes: 64 * GIB,
        power: PowerModel::linear(200.0, 250.0).with_standby(20.0, 120.0),
    };
    let c = Cluster {
        nodes: vec![node("a", 8.0), node("b", 8.0), old.clone()],
        containers: vec![
            ct("a1", 0, &[2.0; 5], 1),
            ct("b1", 1, &[0.5; 5], 1),
            ct("old1", 2, &[1.0; 5], 1),
            ct("old2", 2, &[0.5; 5], 1),
        ],
        sample_secs: 60.0,
    };
    let plan = parse_policy("consolidate").unwrap().plan(&c, &CostModel::default());
    // b is the lightest (0.5 cores), but old draws 218.75 W for 1.5 cores; in standby 20 W,
    // and its containers add 200 * 1.5 / 8 = 37.5 W on a.
    assert_eq!(plan.idle_nodes.len(), 1, "{plan:#?}");
    assert_eq!(plan.idle_nodes[0].node, "old");
    assert!((plan.idle_nodes[0].watts_saved - (218.75 - 20.0 - 37.5)).abs() < 1e-6, "{plan:#?}");
    assert!(plan.moves.iter().all(|m| m.from == "old" && m.to == "a"), "{plan:#?}");
    // Where old is as efficient as the others (100-300 W per 8 cores' worth), b goes first.
    let mut same = c.clone();
    same.nodes[2] = Node { cpu_cores: 8.0, power: PowerModel::linear(100.0, 300.0), ..old };
    let plan = parse_policy("consolidate").unwrap().plan(&same, &CostModel::default());
    assert_eq!(plan.idle_nodes[0].node, "b", "{plan:#?}");
}

/// A policy that proposes the plans it is given, one per evaluation.
struct Scripted(std::sync::Mutex<Vec<Plan>>);

impl crate::policies::Policy for Scripted {
    fn spec(&self) -> String {
        "scripted".into()
    }

    fn plan(&self, _: &Cluster, _: &CostModel) -> Plan {
        self.0.lock().unwrap().remove(0)
    }
}

fn scripted_move(container: &str, from: &str, to: &str) -> Move {
    Move {
        container: container.into(),
        from: from.into(),
        to: to.into(),
        score: 1.0,
        reason: Explanation {
            policy: "scripted".into(),
            summary: String::new(),
            figures: vec![],
            predicted_gain: 1.0,
            gain_unit: String::new(),
            estimated_cost: CostModel::default().predict(GIB, 0.0),
        },
    }
}

#[test]
fn hysteresis_holds_a_container_away_from_a_node_it_relieved_not_from_one_it_emptied() {
    let emptying_a = Plan {
        moves: vec![scripted_move("x", "a", "b")],
        idle_nodes: vec![IdleNode { node: "a".into(), watts_saved: 100.0 }],
        deferred: vec![],
    };
    let back_to_a = Plan { moves: vec![scripted_move("x", "b", "a")], ..Plan::default() };
    let back_to_b = Plan { moves: vec![scripted_move("x", "a", "b")], ..Plan::default() };
    let policy = Scripted(std::sync::Mutex::new(vec![emptying_a, back_to_a, back_to_b]));
    let config = EngineConfig { max_concurrent: 4, cooldown_secs: 600.0, hysteresis_secs: 7200.0 };
    let mut engine = Engine::new(Box::new(policy), CostModel::default(), config);
    let c = cluster(vec![ct("x", 0, &[1.0; 5], 1)]);
    // x leaves a because a is being emptied ...
    assert_eq!(engine.evaluate(0.0, &c, 0).idle_nodes.len(), 1);
    // ... so it may go back to a when load rises there (a relief of b) ...
    assert_eq!(engine.evaluate(1000.0, &c, 0).moves.len(), 1);
    // ... but it left b to relieve it: not back to b within the hysteresis.
    let plan = engine.evaluate(2000.0, &c, 0);
    assert!(plan.moves.is_empty(), "{plan:#?}");
    assert!(plan.deferred[0].1.starts_with("hysteresis: left b"), "{plan:#?}");
}

#[test]
fn the_engine_bounds_concurrent_migrations() {
    let c = cluster(vec![
        ct("a1", 0, &[3.0; 5], 1),
        ct("a2", 0, &[3.0; 5], 1),
        ct("a3", 0, &[3.0; 5], 1),
        ct("a4", 0, &[3.0; 5], 1),
    ]);
    let config = EngineConfig { max_concurrent: 2, ..EngineConfig::default() };
    let mut engine = Engine::new(parse_policy("balance:tolerance=0.1").unwrap(), CostModel::default(), config);
    let plan = engine.evaluate(0.0, &c, 1);
    assert_eq!(plan.moves.len(), 1, "{plan:#?}");
    assert!(plan.deferred.iter().any(|(_, why)| why.contains("at most 2 concurrent")));
}

#[test]
fn forecast_acts_before_the_daily_peak() {
    // A day of 60 s samples with a peak at 12:00; it is now 11:00 and load is still moderate.
    let day = 1440;
    let shape = |i: usize| if (660..780).contains(&(i % day)) { 3.5 } else { 1.0 };
    let history: Vec<f64> = (0..day + 660).map(shape).collect();
    let c = Cluster {
        nodes: vec![node("a", 8.0), node("b", 8.0)],
        containers: vec![
            Container {
                name: "p1".into(),
                node: 0,
                cpu: history.clone(),
                memory_bytes: GIB,
                dirty_bytes_per_sec: 0.0,
                forecast: Default::default(),
                pinned: false,
            },
            Container {
                name: "p2".into(),
                node: 0,
                cpu: history,
                memory_bytes: GIB,
                dirty_bytes_per_sec: 0.0,
                forecast: Default::default(),
                pinned: false,
            },
        ],
        sample_secs: 60.0,
    };
    // Now 2 of 8 cores: hotspot sees nothing; forecast sees 7 cores coming within 30 min.
    assert!(parse_policy("hotspot:k=1,n=1").unwrap().plan(&c, &CostModel::default()).moves.is_empty());
    let plan = parse_policy("forecast:horizon=30m,threshold=0.75").unwrap().plan(&c, &CostModel::default());
    assert_eq!(plan.moves.len(), 1, "{plan:#?}");
    assert_eq!(plan.moves[0].to, "b");
}

/// Two 8-core nodes, `a` holding `spiky` (2 cores, then `spike` for its last samples) and
/// `steady` (4 cores), `b` holding `other` (1 core): less than a day of history, so the forecast
/// is the current level.
fn spiking(spike: &[f64]) -> Cluster {
    let mut cpu = vec![2.0; 10];
    cpu.extend_from_slice(spike);
    Cluster {
        nodes: vec![node("a", 8.0), node("b", 8.0)],
        containers: vec![ct("spiky", 0, &cpu, 1), ct("steady", 0, &[4.0; 12], 1), ct("other", 1, &[1.0; 12], 1)],
        sample_secs: 60.0,
    }
}

#[test]
fn forecast_does_not_move_on_a_one_off_spike() {
    // One sample of 5 cores: a's forecast peak (9 cores) is above capacity in the newest
    // forecast only.
    let blip = spiking(&[2.0, 5.0]);
    assert!(parse_policy("forecast").unwrap().plan(&blip, &CostModel::default()).moves.is_empty());
    assert_eq!(parse_policy("forecast:k=1,n=1").unwrap().plan(&blip, &CostModel::default()).moves.len(), 1);
    // The same level for five samples persists: it is relieved.
    let lasting = spiking(&[5.0; 5]);
    let plan = parse_policy("forecast").unwrap().plan(&lasting, &CostModel::default());
    assert_eq!(plan.moves.len(), 1, "{plan:#?}");
    assert!(plan.moves[0].reason.figures.iter().any(|f| f.name == "hot_forecasts" && f.value == 5.0));
}

#[test]
fn forecast_fills_a_receiver_near_its_threshold_only_to_prevent_contention() {
    // Threshold 85 %, margin 10 %: a receiver normally stays within 75 % (6 of 8 cores).
    let with = |spiky: f64, other: f64| {
        let mut c = spiking(&[spiky; 5]);
        c.containers[2] = ct("other", 1, &[other; 12], 1);
        parse_policy("forecast").unwrap().plan(&c, &CostModel::default())
    };
    // a at 7.2 cores (90 %, under capacity); b at 3.5: spiky would take it to 6.7 (84 %),
    // under the threshold but above 75 %: no move.
    assert!(with(3.2, 3.5).moves.is_empty());
    // b at 2.5: spiky (3.2) takes it to 5.7 cores, within 75 %.
    let plan = with(3.2, 2.5);
    assert_eq!(plan.moves.len(), 1, "{plan:#?}");
    assert_eq!(plan.moves[0].container, "spiky");
    // a at 8.2 cores, above capacity: a receiver may come up to 85 % (spiky: 6.7 of 8).
    let plan = with(4.2, 2.5);
    assert_eq!(plan.moves.len(), 1, "{plan:#?}");
    let after = plan.moves[0].reason.figures.iter().find(|f| f.name == "to_predicted_peak_util_after").unwrap();
    assert!((0.75..=0.85).contains(&after.value), "{after:?}");
}
