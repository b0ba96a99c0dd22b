//! HeW on small cases worked out by hand (see tests/test_hew.py for the derivation).

use faer::{mat, Mat};
use heatsearch_core::{hew_pool, hew_pool_batch, hew_weights, local_mean, Error, HewParams};

fn close(a: f64, b: f64, rtol: f64) -> bool {
    (a - b).abs() <= rtol * b.abs()
}

/// Four cells with mean 0: three identical (1, 0) and one (1, 1).
fn hand_worked() -> [f64; 4] {
    let c = 0.5f64.sqrt();
    let z = 0.1 * (1.0 + c) / 2.0;
    let t4 = 3.0 * (c / (c + z)) / 5.0;
    let (a11, a12, a21, a22) = (1.0 + c + z, -c, -2.0 * c, 3.0 * c + z);
    let det = a11 * a22 - a12 * a21;
    let u = (a22 - a12 * c) / det;
    let v = (a11 * c - a21) / det;
    let t1 = (2.0 * u + v) / 5.0;
    [1.0 / t1, 1.0 / t1, 1.0 / t1, 1.0 / t4]
}

#[test]
fn hand_worked_example_f64_and_f32() {
    let expected = hand_worked();
    let f = mat![[1.0f64, 0.0], [1.0, 0.0], [1.0, 0.0], [1.0, 1.0]];
    let w = hew_weights(f.as_ref(), Some(&[0.0, 0.0]), HewParams::default()).unwrap();
    for (a, b) in w.iter().zip(expected) {
        assert!(close(*a, b, 1e-12), "{a} vs {b}");
    }
    let f32m = mat![[1.0f32, 0.0], [1.0, 0.0], [1.0, 0.0], [1.0, 1.0]];
    let w = hew_weights(f32m.as_ref(), Some(&[0.0, 0.0]), HewParams::default()).unwrap();
    for (a, b) in w.iter().zip(expected) {
        assert!(close(*a as f64, b, 1e-6), "{a} vs {b}");
    }
    // The descriptor is sum_j w_j f_j on the raw features.
    let v = hew_pool(f.as_ref(), Some(&[0.0, 0.0]), HewParams::default()).unwrap();
    assert!(close(v[0], expected.iter().sum(), 1e-12));
    assert!(close(v[1], expected[3], 1e-12));
}

#[test]
fn degenerate_maps() {
    let p = HewParams::default();
    // One cell.
    assert_eq!(
        hew_weights(mat![[3.0f64, 4.0]].as_ref(), None, p).unwrap(),
        vec![1.0]
    );
    // All dead.
    assert_eq!(
        hew_weights(Mat::<f64>::zeros(5, 3).as_ref(), None, p).unwrap(),
        vec![1.0; 5]
    );
    // Opposite directions after centring: no positive affinity.
    assert_eq!(
        hew_weights(mat![[1.0f64, 0.0], [0.0, 1.0]].as_ref(), None, p).unwrap(),
        vec![1.0; 2]
    );
    // An isolated cell gets the largest weight of the others.
    let f = mat![
        [1.0f64, 0.0, 0.0],
        [1.0, 0.1, 0.0],
        [0.9, 0.2, 0.0],
        [0.0, 0.0, 1.0]
    ];
    let w = hew_weights(f.as_ref(), Some(&[0.0; 3]), p).unwrap();
    let largest = w[..3].iter().cloned().fold(f64::MIN, f64::max);
    assert_eq!(w[3], largest);
}

#[test]
fn batch_rows_equal_single_maps_and_mean_of_all_cells() {
    let a = mat![[1.0f64, 0.0], [0.5, 0.5], [0.0, 1.0], [0.2, 0.1]];
    let b = mat![[2.0f64, 1.0], [0.0, 3.0]];
    let p = HewParams::default();
    let batch = hew_pool_batch(&[a.as_ref(), b.as_ref()], None, p).unwrap();
    assert_eq!(batch[0], hew_pool(a.as_ref(), None, p).unwrap());
    assert_eq!(batch[1], hew_pool(b.as_ref(), None, p).unwrap());
    let mu = local_mean(&[a.as_ref(), b.as_ref()]).unwrap();
    assert!(close(mu[0], 3.7 / 6.0, 1e-15) && close(mu[1], 5.6 / 6.0, 1e-15));
}

#[test]
fn bad_data_is_an_error_not_a_panic() {
    let p = HewParams::default();
    let nan = mat![[1.0f64, f64::NAN]];
    assert!(matches!(
        hew_weights(nan.as_ref(), None, p),
        Err(Error::NonFinite(_))
    ));
    // A batch names its first bad map and that map's first bad entry.
    let ok = mat![[1.0f64, 2.0], [0.5, 0.0]];
    let bad = mat![[1.0f64, 2.0], [f64::INFINITY, f64::NAN]];
    let batch = [ok.as_ref(), bad.as_ref(), nan.as_ref()];
    for result in [
        hew_pool_batch(&batch, None, p).map(|_| ()),
        local_mean(&batch).map(|_| ()),
    ] {
        match result {
            Err(Error::NonFinite(msg)) => assert!(
                msg.starts_with("fmaps[1] must be finite") && msg.ends_with("at row 1, column 0"),
                "{msg}"
            ),
            other => panic!("expected a NonFinite error, got {other:?}"),
        }
    }
    let mean_nan = [0.0, f64::NAN];
    match hew_pool(ok.as_ref(), Some(&mean_nan), p) {
        Err(Error::NonFinite(msg)) => assert_eq!(msg, "mean must be finite, got NaN at index 1"),
        other => panic!("expected a NonFinite error, got {other:?}"),
    }
}

/// Shapes and parameters are the caller's to check (heatsearch's Python layer does, with
/// messages); a broken precondition is a bug of the caller and panics, never a wrong result.
#[test]
fn broken_preconditions_panic() {
    let p = HewParams::default();
    let f = mat![[1.0f64, 2.0]];
    let c3 = mat![[1.0f64, 2.0, 3.0]];
    let empty = Mat::<f64>::zeros(0, 3);
    let panics =
        |op: &dyn Fn()| std::panic::catch_unwind(std::panic::AssertUnwindSafe(op)).is_err();
    assert!(panics(&|| drop(hew_pool(empty.as_ref(), None, p))));
    assert!(panics(&|| drop(hew_weights(f.as_ref(), Some(&[1.0]), p))));
    let negative = HewParams {
        threshold: -0.1,
        ground: 0.1,
    };
    assert!(panics(&|| drop(hew_weights(f.as_ref(), None, negative))));
    let no_ground = HewParams {
        threshold: 0.0,
        ground: 0.0,
    };
    assert!(panics(&|| drop(hew_weights(f.as_ref(), None, no_ground))));
    assert!(panics(&|| drop(hew_pool_batch(
        &[f.as_ref(), c3.as_ref()],
        None,
        p
    ))));
}
