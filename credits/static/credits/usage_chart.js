/* The licence usage report's chart: credits (or segments, for a self-service brand) by day.
   Data comes from a json_script tag rendered by the page; Chart.js is vendored. */
(function () {
  "use strict";
  function draw() {
    var source = document.getElementById("usage-chart-data");
    var canvas = document.getElementById("usage-chart");
    if (!source || !canvas || typeof Chart === "undefined") return;
    var data = JSON.parse(source.textContent);
    var bySegments = canvas.dataset.measure === "segments";
    new Chart(canvas, {
      type: "bar",
      data: {
        labels: data.labels,
        datasets: [{
          label: bySegments ? "Segments" : "Credits consumed",
          data: bySegments ? data.segments : data.credits,
          backgroundColor: "#3b6fd8",
          borderRadius: 3,
        }],
      },
      options: {
        responsive: true,
        maintainAspectRatio: false,
        animation: false,
        plugins: { legend: { display: false } },
        scales: { y: { beginAtZero: true }, x: { ticks: { autoSkip: true, maxTicksLimit: 16 } } },
      },
    });
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", draw);
  else draw();
})();
