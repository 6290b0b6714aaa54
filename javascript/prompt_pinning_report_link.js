// Prompt pinning: turn the "Pinning report: <url>" line of a run's result into a link.
// The WebUI shows a script's comments as escaped plain text (modules/ui_common.py plaintext_to_html),
// so the run writes the report's URL as text and this script makes it clickable.
(function() {
    var prefix = "Pinning report: ";

    function linkify(container) {
        var walker = document.createTreeWalker(container, NodeFilter.SHOW_TEXT);
        var found = [];
        while (walker.nextNode()) {
            var index = walker.currentNode.nodeValue.indexOf(prefix);
            if (index !== -1 && walker.currentNode.parentNode.tagName !== "A") {
                found.push(walker.currentNode);
            }
        }
        found.forEach(function(node) {
            var text = node.nodeValue;
            var start = text.indexOf(prefix) + prefix.length;
            var rest = text.slice(start);
            var url = rest.split(/\s/)[0];
            if (!url || (url.indexOf("file=") !== 0 && url.indexOf("prompt-pinning/") !== 0)) {
                return;
            }
            var link = document.createElement("a");
            link.href = url;
            link.target = "_blank";
            link.rel = "noopener";
            link.textContent = "open the run's report";
            link.title = url;
            var after = document.createTextNode(rest.slice(url.length));
            node.nodeValue = text.slice(0, start);
            node.parentNode.insertBefore(after, node.nextSibling);
            node.parentNode.insertBefore(link, after);
        });
    }

    if (typeof onAfterUiUpdate === "function" || typeof onUiUpdate === "function") {
        (typeof onAfterUiUpdate === "function" ? onAfterUiUpdate : onUiUpdate)(function() {
            var app = typeof gradioApp === "function" ? gradioApp() : document;
            ["html_log_txt2img", "html_log_img2img"].forEach(function(id) {
                var element = app.getElementById(id);
                if (element) {
                    linkify(element);
                }
            });
        });
    }
})();
